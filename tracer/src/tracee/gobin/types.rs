//! Go types as far as escapade needs them: enough shape to assign registers by the ABI and to
//! decode a value from its words. Pointers do not carry their pointee, so the tree is finite
//! even for recursive types.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoType {
    /// The Go spelling, e.g. `int`, `*main.P`, `[]uint8`, `main.Order`.
    pub name: String,
    pub size: u64,
    pub align: u64,
    #[serde(skip)]
    pub kind: TypeKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    Bool,
    Int {
        signed: bool,
    },
    Float,
    Complex,
    /// One machine word that points somewhere: `*T`, maps, channels, funcs, `unsafe.Pointer`.
    Pointer,
    String,
    Slice,
    /// `empty` is `interface{}`/`any` (first word is a type), otherwise the first word is an itab.
    Interface {
        empty: bool,
    },
    Struct(Vec<Field>),
    Array {
        elem: Box<GoType>,
        len: u64,
    },
    /// A type whose shape the debug info did not describe; decoded as raw words.
    Opaque,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub offset: u64,
    pub ty: GoType,
}

impl GoType {
    pub fn word(name: &str, kind: TypeKind) -> GoType {
        GoType {
            name: name.to_string(),
            size: 8,
            align: 8,
            kind,
        }
    }

    /// A short description of the kind, for tables and JSON.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TypeKind::Bool => "bool",
            TypeKind::Int { signed: true } => "int",
            TypeKind::Int { signed: false } => "uint",
            TypeKind::Float => "float",
            TypeKind::Complex => "complex",
            TypeKind::Pointer => "pointer",
            TypeKind::String => "string",
            TypeKind::Slice => "slice",
            TypeKind::Interface { .. } => "interface",
            TypeKind::Struct(_) => "struct",
            TypeKind::Array { .. } => "array",
            TypeKind::Opaque => "opaque",
        }
    }
}
