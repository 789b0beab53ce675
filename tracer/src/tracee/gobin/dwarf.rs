//! What the Go compiler wrote into DWARF: each function's parameters and results with their
//! types, where it says they are at entry (to cross-check our ABI assignment), functions that
//! only exist inlined, and the layout of the runtime structures the probes read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gimli::{AttributeValue, EndianArcSlice, LittleEndian, Reader as _, UnitOffset};
use object::{Object as _, ObjectSection as _, ReadRef};

use super::types::{Field, GoType, TypeKind};

type R = EndianArcSlice<LittleEndian>;

/// Go's own DWARF attribute holding the reflect.Kind of a type.
const DW_AT_GO_KIND: gimli::DwAt = gimli::DwAt(0x2900);
const GO_KIND_SLICE: u64 = 23;
const GO_KIND_STRING: u64 = 24;

/// Runtime structures whose layout the probes need, which changes between Go releases.
const RUNTIME_STRUCTS: &[&str] = &[
    "runtime.g",
    "runtime.workType",
    "runtime.mstats",
    "runtime.gcControllerState",
];

/// Deeper than any real Go type; a guard against malformed DWARF.
const MAX_TYPE_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("reading DWARF: {0}")]
pub struct DwarfError(#[from] gimli::Error);

/// A parameter or result as DWARF describes it.
#[derive(Clone, Debug)]
pub struct DwarfParam {
    pub name: String,
    pub ty: GoType,
    pub is_result: bool,
    /// Where DWARF says the value is at the function's first instruction, spelled like
    /// [`super::abi::Location`] (`RAX`, `RBX+RCX`, `stack+8`); None when DWARF does not say.
    pub entry_location: Option<String>,
}

/// Offsets into `runtime.g` read from its DWARF description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GLayout {
    pub goid: u64,
    pub stack_lo: u64,
    pub stack_hi: u64,
}

struct FuncDie {
    unit: gimli::DebugInfoOffset,
    entry: UnitOffset,
    low_pc: u64,
}

pub struct DwarfInfo {
    dwarf: gimli::Dwarf<R>,
    /// Unit headers sorted by offset, to find the unit a cross-unit reference points into.
    units: Vec<gimli::UnitHeader<R>>,
    functions: HashMap<String, FuncDie>,
    inlined_only: HashSet<String>,
    /// Where each of `RUNTIME_STRUCTS` is described.
    structs: HashMap<String, (gimli::DebugInfoOffset, UnitOffset)>,
}

impl DwarfInfo {
    /// Reads the DWARF sections; `Ok(None)` when the binary has none (built with `-ldflags=-w`).
    pub fn load<'d, D: ReadRef<'d>>(
        file: &object::File<'d, D>,
    ) -> Result<Option<DwarfInfo>, DwarfError> {
        if file.section_by_name(".debug_info").is_none() {
            return Ok(None);
        }
        let dwarf = gimli::Dwarf::load(|id| -> Result<R, gimli::Error> {
            let data = file
                .section_by_name(id.name())
                .and_then(|s| s.uncompressed_data().ok())
                .map(|d| Arc::<[u8]>::from(d.as_ref()))
                .unwrap_or_else(|| Arc::from(&[][..]));
            Ok(EndianArcSlice::new(data, LittleEndian))
        })?;
        let mut units = Vec::new();
        let mut headers = dwarf.units();
        while let Some(header) = headers.next()? {
            units.push(header);
        }
        let mut info = DwarfInfo {
            dwarf,
            units,
            functions: HashMap::new(),
            inlined_only: HashSet::new(),
            structs: HashMap::new(),
        };
        info.index()?;
        Ok(Some(info))
    }

    fn index(&mut self) -> Result<(), DwarfError> {
        let mut abstract_names = HashSet::new();
        for header in &self.units {
            let unit = self.dwarf.unit(header.clone())?;
            let unit_offset = header
                .offset()
                .as_debug_info_offset()
                .expect("debug_info unit");
            let mut entries = unit.entries();
            while let Some((_, entry)) = entries.next_dfs()? {
                match entry.tag() {
                    gimli::DW_TAG_subprogram => {
                        let Some(name) = self.name(&unit, entry)? else {
                            continue;
                        };
                        if let Some(AttributeValue::Inline(_)) =
                            entry.attr_value(gimli::DW_AT_inline)?
                        {
                            abstract_names.insert(name);
                        } else if let Some(low_pc) = low_pc(&self.dwarf, &unit, entry)? {
                            self.functions.insert(
                                name,
                                FuncDie {
                                    unit: unit_offset,
                                    entry: entry.offset(),
                                    low_pc,
                                },
                            );
                        }
                    }
                    gimli::DW_TAG_structure_type => {
                        if let Some(name) = self.name(&unit, entry)?
                            && RUNTIME_STRUCTS.contains(&name.as_str())
                        {
                            self.structs
                                .entry(name)
                                .or_insert((unit_offset, entry.offset()));
                        }
                    }
                    _ => {}
                }
            }
        }
        self.inlined_only = abstract_names
            .into_iter()
            .filter(|n| !self.functions.contains_key(n))
            .collect();
        Ok(())
    }

    pub fn g_layout(&self) -> Result<Option<GLayout>, DwarfError> {
        let field = |path: &[&str]| self.field_offset("runtime.g", path);
        Ok(
            match (
                field(&["goid"])?,
                field(&["stack", "lo"])?,
                field(&["stack", "hi"])?,
            ) {
                (Some(goid), Some(stack_lo), Some(stack_hi)) => Some(GLayout {
                    goid,
                    stack_lo,
                    stack_hi,
                }),
                _ => None,
            },
        )
    }

    /// The offset of `path` (a field, a field of that field, ...) in one of
    /// `RUNTIME_STRUCTS`; None when DWARF does not describe it.
    pub fn field_offset(&self, structure: &str, path: &[&str]) -> Result<Option<u64>, DwarfError> {
        let Some(&(unit, entry)) = self.structs.get(structure) else {
            return Ok(None);
        };
        let unit = self.unit_at(unit)?;
        let mut ty = self.build_type(&unit, entry, &mut TypeCache::default(), 0)?;
        let mut offset = 0;
        for name in path {
            let TypeKind::Struct(fields) = ty.kind else {
                return Ok(None);
            };
            let Some(field) = fields.into_iter().find(|f| f.name == *name) else {
                return Ok(None);
            };
            offset += field.offset;
            ty = field.ty;
        }
        Ok(Some(offset))
    }

    /// True for a function the compiler inlined at every call site, so no code of its own exists.
    pub fn is_inlined_only(&self, name: &str) -> bool {
        self.inlined_only.contains(name)
    }

    /// Parameters then results of `name`, in declaration order; None if DWARF lacks the function.
    pub fn params(&self, name: &str) -> Result<Option<Vec<DwarfParam>>, DwarfError> {
        let Some(func) = self.functions.get(name) else {
            return Ok(None);
        };
        let unit = self.unit_at(func.unit)?;
        let mut tree = unit.entries_tree(Some(func.entry))?;
        let root = tree.root()?;
        let mut children = root.children();
        let mut params = Vec::new();
        let mut types = TypeCache::default();
        while let Some(child) = children.next()? {
            let entry = child.entry();
            if entry.tag() != gimli::DW_TAG_formal_parameter {
                continue;
            }
            let name = self.name(&unit, entry)?.unwrap_or_default();
            let is_result = matches!(
                entry.attr_value(gimli::DW_AT_variable_parameter)?,
                Some(AttributeValue::Flag(true))
            );
            let ty = match entry.attr_value(gimli::DW_AT_type)? {
                Some(v) => self.type_at(&unit, v, &mut types, 0)?,
                None => opaque("?", 0),
            };
            let entry_location = self.entry_location(&unit, entry, func.low_pc)?;
            params.push(DwarfParam {
                name,
                ty,
                is_result,
                entry_location,
            });
        }
        Ok(Some(params))
    }

    fn unit_at(&self, offset: gimli::DebugInfoOffset) -> Result<gimli::Unit<R>, DwarfError> {
        let index = self.units.partition_point(|h| {
            h.offset()
                .as_debug_info_offset()
                .is_some_and(|o| o <= offset)
        });
        let header = self.units[index.saturating_sub(1)].clone();
        Ok(self.dwarf.unit(header)?)
    }

    fn name(
        &self,
        unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
    ) -> Result<Option<String>, DwarfError> {
        let Some(value) = entry.attr_value(gimli::DW_AT_name)? else {
            return Ok(None);
        };
        let s = self.dwarf.attr_string(unit, value)?;
        Ok(Some(s.to_string_lossy()?.into_owned()))
    }

    /// Resolves a DW_AT_type reference, which Go may point into another unit.
    fn type_at(
        &self,
        unit: &gimli::Unit<R>,
        value: AttributeValue<R>,
        cache: &mut TypeCache,
        depth: usize,
    ) -> Result<GoType, DwarfError> {
        let global = match value {
            AttributeValue::UnitRef(o) => o.to_debug_info_offset(&unit.header),
            AttributeValue::DebugInfoRef(o) => Some(o),
            _ => None,
        };
        let Some(global) = global else {
            return Ok(opaque("?", 0));
        };
        if let Some(ty) = cache.0.get(&global) {
            return Ok(ty.clone());
        }
        if depth > MAX_TYPE_DEPTH {
            return Ok(opaque("?", 0));
        }
        let owned;
        let unit = if global.to_unit_offset(&unit.header).is_some() {
            unit
        } else {
            owned = self.unit_at(global)?;
            &owned
        };
        let offset = global
            .to_unit_offset(&unit.header)
            .ok_or(gimli::Error::NoEntryAtGivenOffset)?;
        let ty = self.build_type(unit, offset, cache, depth)?;
        cache.0.insert(global, ty.clone());
        Ok(ty)
    }

    fn build_type(
        &self,
        unit: &gimli::Unit<R>,
        offset: UnitOffset,
        cache: &mut TypeCache,
        depth: usize,
    ) -> Result<GoType, DwarfError> {
        let mut tree = unit.entries_tree(Some(offset))?;
        let root = tree.root()?;
        let entry = root.entry().clone();
        let name = self.name(unit, &entry)?.unwrap_or_else(|| "?".into());
        let size = udata(&entry, gimli::DW_AT_byte_size)?;
        let ty = match entry.tag() {
            gimli::DW_TAG_base_type => {
                let size = size.unwrap_or(0);
                let kind = match entry.attr_value(gimli::DW_AT_encoding)? {
                    Some(AttributeValue::Encoding(gimli::DW_ATE_boolean)) => TypeKind::Bool,
                    Some(AttributeValue::Encoding(gimli::DW_ATE_float)) => TypeKind::Float,
                    Some(AttributeValue::Encoding(gimli::DW_ATE_complex_float)) => {
                        TypeKind::Complex
                    }
                    Some(AttributeValue::Encoding(
                        gimli::DW_ATE_signed | gimli::DW_ATE_signed_char,
                    )) => TypeKind::Int { signed: true },
                    Some(AttributeValue::Encoding(
                        gimli::DW_ATE_unsigned | gimli::DW_ATE_unsigned_char,
                    )) => TypeKind::Int { signed: false },
                    _ => TypeKind::Opaque,
                };
                let align = if kind == TypeKind::Complex {
                    size / 2
                } else {
                    size
                };
                GoType {
                    name,
                    size,
                    align: align.clamp(1, 8),
                    kind,
                }
            }
            gimli::DW_TAG_pointer_type | gimli::DW_TAG_subroutine_type => {
                GoType::word(&name, TypeKind::Pointer)
            }
            gimli::DW_TAG_typedef => {
                let Some(under) = entry.attr_value(gimli::DW_AT_type)? else {
                    return Ok(opaque(&name, size.unwrap_or(0)));
                };
                let under = self.type_at(unit, under, cache, depth + 1)?;
                let kind = match under.name.as_str() {
                    "runtime.eface" => TypeKind::Interface { empty: true },
                    "runtime.iface" => TypeKind::Interface { empty: false },
                    _ => under.kind,
                };
                GoType {
                    name,
                    kind,
                    ..under
                }
            }
            gimli::DW_TAG_structure_type => {
                let go_kind = udata(&entry, DW_AT_GO_KIND)?;
                let mut fields = Vec::new();
                let mut children = root.children();
                while let Some(child) = children.next()? {
                    let member = child.entry();
                    if member.tag() != gimli::DW_TAG_member {
                        continue;
                    }
                    let field_name = self.name(unit, member)?.unwrap_or_default();
                    let offset = udata(member, gimli::DW_AT_data_member_location)?.unwrap_or(0);
                    let ty = match member.attr_value(gimli::DW_AT_type)? {
                        Some(v) => self.type_at(unit, v, cache, depth + 1)?,
                        None => opaque("?", 0),
                    };
                    fields.push(Field {
                        name: field_name,
                        offset,
                        ty,
                    });
                }
                let align = fields.iter().map(|f| f.ty.align).max().unwrap_or(1);
                let kind = match go_kind {
                    Some(GO_KIND_STRING) => TypeKind::String,
                    Some(GO_KIND_SLICE) => TypeKind::Slice,
                    _ => TypeKind::Struct(fields),
                };
                GoType {
                    name,
                    size: size.unwrap_or(0),
                    align,
                    kind,
                }
            }
            gimli::DW_TAG_array_type => {
                let elem = match entry.attr_value(gimli::DW_AT_type)? {
                    Some(v) => self.type_at(unit, v, cache, depth + 1)?,
                    None => opaque("?", 0),
                };
                let mut len = None;
                let mut children = root.children();
                while let Some(child) = children.next()? {
                    let sub = child.entry();
                    if sub.tag() == gimli::DW_TAG_subrange_type {
                        len = udata(sub, gimli::DW_AT_count)?.or(udata(
                            sub,
                            gimli::DW_AT_upper_bound,
                        )?
                        .map(|u| u + 1));
                    }
                }
                let len = len.unwrap_or(0);
                let align = elem.align;
                GoType {
                    name,
                    size: size.unwrap_or(elem.size * len),
                    align,
                    kind: TypeKind::Array {
                        elem: Box::new(elem),
                        len,
                    },
                }
            }
            _ => opaque(&name, size.unwrap_or(0)),
        };
        Ok(ty)
    }

    /// Where the parameter's location list says it is at `pc`, as register names or `stack+N`.
    fn entry_location(
        &self,
        unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
        pc: u64,
    ) -> Result<Option<String>, DwarfError> {
        let expr = match entry.attr_value(gimli::DW_AT_location)? {
            Some(AttributeValue::Exprloc(expr)) => Some(expr),
            Some(AttributeValue::LocationListsRef(offset)) => {
                let mut locations = self.dwarf.locations(unit, offset)?;
                let mut found = None;
                while let Some(loc) = locations.next()? {
                    if loc.range.begin <= pc && pc < loc.range.end {
                        found = Some(loc.data);
                        break;
                    }
                }
                found
            }
            _ => None,
        };
        let Some(expr) = expr else { return Ok(None) };
        Ok(describe_location(expr, unit.encoding()))
    }
}

#[derive(Default)]
struct TypeCache(HashMap<gimli::DebugInfoOffset, GoType>);

fn opaque(name: &str, size: u64) -> GoType {
    GoType {
        name: name.to_string(),
        size,
        align: size.clamp(1, 8),
        kind: TypeKind::Opaque,
    }
}

fn udata(
    entry: &gimli::DebuggingInformationEntry<R>,
    attr: gimli::DwAt,
) -> Result<Option<u64>, DwarfError> {
    Ok(entry.attr_value(attr)?.and_then(|v| v.udata_value()))
}

fn low_pc(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    entry: &gimli::DebuggingInformationEntry<R>,
) -> Result<Option<u64>, DwarfError> {
    Ok(match entry.attr_value(gimli::DW_AT_low_pc)? {
        Some(AttributeValue::Addr(a)) => Some(a),
        Some(AttributeValue::DebugAddrIndex(i)) => Some(dwarf.address(unit, i)?),
        _ => None,
    })
}

/// DWARF register numbers for amd64 (System V psABI), as Go's ABI names them.
fn register_name(n: u16) -> Option<String> {
    const GPR: [&str; 16] = [
        "RAX", "RDX", "RCX", "RBX", "RSI", "RDI", "RBP", "RSP", "R8", "R9", "R10", "R11", "R12",
        "R13", "R14", "R15",
    ];
    match n {
        0..=15 => Some(GPR[n as usize].to_string()),
        17..=32 => Some(format!("X{}", n - 17)),
        _ => None,
    }
}

/// Spells a location expression made of register pieces or a frame-base offset; None for
/// anything else (a piece without a location, a computed value).
fn describe_location(expr: gimli::Expression<R>, encoding: gimli::Encoding) -> Option<String> {
    let mut ops = expr.operations(encoding);
    let mut regs: Vec<String> = Vec::new();
    let mut pending: Option<String> = None;
    while let Ok(Some(op)) = ops.next() {
        match op {
            gimli::Operation::Register { register } => pending = Some(register_name(register.0)?),
            gimli::Operation::Piece { .. } => regs.push(pending.take()?),
            gimli::Operation::FrameOffset { offset } if regs.is_empty() => {
                return Some(format!("stack+{offset}"));
            }
            gimli::Operation::CallFrameCFA if regs.is_empty() => {
                return Some("stack+0".to_string());
            }
            _ => return None,
        }
    }
    if let Some(reg) = pending {
        regs.push(reg);
    }
    (!regs.is_empty()).then(|| regs.join("+"))
}
