// callsites reads the escape corpus (tests/go/escape.go) and prints, for every call that its
// driver function run makes to a corpus function, the function's name as the runtime prints it
// and, for each parameter (receiver first), where the parameter is declared and where the
// argument's pointer comes from: the declaration of a local whose address is passed, the line
// of an allocation (new, make, &T{...}, a composite literal, a closure, a concatenation, a
// conversion), a string literal, a global, or nil. The params test matches those positions
// with what `go build -gcflags=-m=2` says about them. One JSON object per call on stdout.
//
// It reads syntax only: the corpus keeps to forms it knows (one call per corpus function,
// explicit instantiations, arguments built on lines of their own), and anything else is
// reported as an "unsupported" origin for the test to refuse.
//
// Usage: callsites <file.go>
package main

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"strings"
)

type origin struct {
	// literal, nil, global, var (a local whose address is taken), alloc, chan, value (no
	// pointer), or unsupported.
	Kind string `json:"kind"`
	Line int    `json:"line,omitempty"`
	Col  int    `json:"col,omitempty"`
	Name string `json:"name,omitempty"`
	Text string `json:"text"`
	// For a string-to-bytes conversion: where the string's bytes come from, which is where
	// the slice points if the compiler reuses them (zero-copy).
	Source *origin `json:"source,omitempty"`
}

type param struct {
	Name     string `json:"name"`
	Line     int    `json:"line"`
	Col      int    `json:"col"`
	Receiver bool   `json:"receiver"`
	// The callee appends to it (a slice that may grow).
	Appended bool `json:"appended"`
	// A string converted to []byte: by the caller to make the argument, or by the callee.
	Bytes  bool   `json:"bytes"`
	Origin origin `json:"origin"`
}

type call struct {
	Function string  `json:"function"`
	Line     int     `json:"line"`
	Params   []param `json:"params"`
}

type corpus struct {
	fset    *token.FileSet
	file    *ast.File
	funcs   map[string]*ast.FuncDecl // plain functions by name
	methods map[string]*ast.FuncDecl // methods by name (the corpus keeps them unique)
	structs map[string]*ast.StructType
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: callsites <file.go>")
	}
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, os.Args[1], nil, parser.ParseComments)
	if err != nil {
		fail(err.Error())
	}
	c := corpus{fset: fset, file: file, funcs: map[string]*ast.FuncDecl{},
		methods: map[string]*ast.FuncDecl{}, structs: map[string]*ast.StructType{}}
	for _, d := range file.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				c.funcs[d.Name.Name] = d
			} else if _, dup := c.methods[d.Name.Name]; dup {
				fail("method name " + d.Name.Name + " is not unique")
			} else {
				c.methods[d.Name.Name] = d
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				if ts, ok := s.(*ast.TypeSpec); ok {
					if st, ok := ts.Type.(*ast.StructType); ok {
						c.structs[ts.Name.Name] = st
					}
				}
			}
		}
	}
	run := c.funcs["run"]
	if run == nil {
		fail("no func run")
	}
	called := map[*ast.FuncDecl]bool{}
	out := json.NewEncoder(os.Stdout)
	ast.Inspect(run.Body, func(n ast.Node) bool {
		ce, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		decl, name, recv := c.callee(ce)
		if decl == nil || !noinline(decl) {
			return true
		}
		called[decl] = true
		cl := call{Function: name, Line: c.line(ce.Pos()), Params: []param{}}
		var args []ast.Expr
		var fields []*ast.Field
		if decl.Recv != nil {
			args = append(args, recv)
			fields = append(fields, decl.Recv.List...)
		}
		args = append(args, ce.Args...)
		fields = append(fields, decl.Type.Params.List...)
		i := 0
		for _, f := range fields {
			names := f.Names
			if len(names) == 0 {
				// An unnamed parameter: the compiler calls it ~p<index>.
				names = []*ast.Ident{{Name: fmt.Sprintf("~p%d", i), NamePos: f.Type.Pos()}}
			}
			for _, id := range names {
				p := param{Name: id.Name, Line: c.line(id.Pos()), Col: c.col(id.Pos()),
					Receiver: decl.Recv != nil && i == 0}
				if p.Receiver {
					p.Origin = c.receiver(args[0], isPointer(f.Type))
				} else {
					p.Origin = c.origin(args[i])
				}
				p.Appended = callsWith(decl.Body, id.Name, func(f ast.Expr) bool { return exprString(f) == "append" })
				p.Bytes = p.Origin.Source != nil ||
					callsWith(decl.Body, id.Name, func(f ast.Expr) bool { return exprString(f) == "[]byte" })
				cl.Params = append(cl.Params, p)
				i++
			}
		}
		check(out.Encode(cl))
		return true
	})
	for _, d := range append(values(c.funcs), values(c.methods)...) {
		if noinline(d) && d != run && !called[d] {
			fail(fmt.Sprintf("corpus function %s (line %d) is never called from run", d.Name.Name, c.line(d.Pos())))
		}
	}
}

// callsWith tells whether body calls a function matching fun with name as first argument.
func callsWith(body *ast.BlockStmt, name string, fun func(ast.Expr) bool) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		if ce, ok := n.(*ast.CallExpr); ok && fun(ce.Fun) && len(ce.Args) > 0 && exprString(ce.Args[0]) == name {
			found = true
		}
		return !found
	})
	return found
}

// callee resolves a call to a corpus function: its declaration, its name as the runtime
// prints it, and for a method the receiver expression.
func (c *corpus) callee(ce *ast.CallExpr) (*ast.FuncDecl, string, ast.Expr) {
	switch fun := ce.Fun.(type) {
	case *ast.Ident:
		if d := c.funcs[fun.Name]; d != nil {
			return d, "main." + fun.Name, nil
		}
	case *ast.IndexExpr: // an explicit instantiation: one shape function per shape
		if id, ok := fun.X.(*ast.Ident); ok && c.funcs[id.Name] != nil {
			return c.funcs[id.Name], "main." + id.Name + "[" + shape(fun.Index) + "]", nil
		}
	case *ast.SelectorExpr:
		d := c.methods[fun.Sel.Name]
		if d == nil {
			return nil, "", nil
		}
		rt := d.Recv.List[0].Type
		ptr := isPointer(rt)
		if ptr {
			rt = rt.(*ast.StarExpr).X
		}
		typ := exprString(rt)
		if g, ok := rt.(*ast.IndexExpr); ok {
			// A generic receiver: the type arguments come from the receiver variable's type.
			vt, ok := c.declaredType(fun.X).(*ast.IndexExpr)
			if !ok {
				fail(fmt.Sprintf("line %d: the receiver's type arguments are not spelled out", c.line(ce.Pos())))
			}
			typ = exprString(g.X) + "[" + shape(vt.Index) + "]"
		}
		if ptr {
			return d, "main.(*" + typ + ")." + fun.Sel.Name, fun.X
		}
		return d, "main." + typ + "." + fun.Sel.Name, fun.X
	}
	return nil, "", nil
}

// shape names the shape the compiler instantiates a basic type argument with.
func shape(arg ast.Expr) string {
	name := exprString(arg)
	switch name {
	case "int", "int64", "uint", "uint64", "string", "float64", "bool":
		return "go.shape." + name
	}
	fail("no known shape for type argument " + name)
	return ""
}

// receiver is the origin of a method's receiver: a pointer receiver called on an addressable
// value takes that value's address.
func (c *corpus) receiver(x ast.Expr, pointerReceiver bool) origin {
	if id, ok := x.(*ast.Ident); ok && pointerReceiver && !isPointer(c.declaredType(x)) {
		return c.addressOf(id)
	}
	return c.origin(x)
}

// declaredType is the type a local variable was declared with: `var x T`, or `x := T{...}`,
// `x := &T{...}`.
func (c *corpus) declaredType(x ast.Expr) ast.Expr {
	id, ok := x.(*ast.Ident)
	if !ok || id.Obj == nil {
		return nil
	}
	switch d := id.Obj.Decl.(type) {
	case *ast.ValueSpec:
		return d.Type
	case *ast.AssignStmt:
		switch rhs := d.Rhs[indexOf(d.Lhs, id.Name)].(type) {
		case *ast.CompositeLit:
			return rhs.Type
		case *ast.UnaryExpr:
			if cl, ok := rhs.X.(*ast.CompositeLit); ok && rhs.Op == token.AND {
				return &ast.StarExpr{X: cl.Type}
			}
		}
	}
	return nil
}

func (c *corpus) origin(e ast.Expr) origin {
	text := exprString(e)
	at := func(kind string) origin {
		return origin{Kind: kind, Line: c.line(e.Pos()), Text: text}
	}
	switch e := e.(type) {
	case *ast.ParenExpr:
		return c.origin(e.X)
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			return at("literal")
		}
		return at("value")
	case *ast.Ident:
		switch {
		case e.Name == "nil" && e.Obj == nil:
			return at("nil")
		case (e.Name == "true" || e.Name == "false") && e.Obj == nil:
			return at("value")
		case e.Obj == nil:
			return at("unsupported")
		case e.Obj.Kind == ast.Fun:
			return origin{Kind: "global", Name: e.Name, Text: "the funcval of top-level func " + e.Name}
		case c.isGlobal(e):
			return at("unsupported") // a global's value: its pointee is whatever it holds
		}
		if init := c.initializer(e); init != nil {
			return c.origin(init)
		}
		return at("unsupported")
	case *ast.UnaryExpr:
		if e.Op != token.AND {
			return at("value")
		}
		switch x := e.X.(type) {
		case *ast.Ident:
			return c.addressOf(x)
		case *ast.CompositeLit:
			return at("alloc")
		}
		return at("unsupported")
	case *ast.CallExpr:
		switch fun := e.Fun.(type) {
		case *ast.Ident:
			switch fun.Name {
			case "make":
				if _, ok := e.Args[0].(*ast.ChanType); ok {
					return at("chan")
				}
				return at("alloc")
			case "new", "any":
				return at("alloc")
			case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float64", "bool":
				return at("value")
			}
		case *ast.ArrayType:
			if fun.Len == nil && exprString(fun.Elt) == "byte" {
				o := at("alloc")
				src := c.origin(e.Args[0])
				o.Source = &src
				return o
			}
		}
		return at("unsupported")
	case *ast.CompositeLit:
		switch t := e.Type.(type) {
		case *ast.ArrayType:
			if t.Len == nil {
				return at("alloc")
			}
			if !c.hasPointer(t) {
				return at("value")
			}
			// An array's first pointer word is its first element's.
			if len(e.Elts) > 0 {
				return c.origin(e.Elts[0])
			}
			return origin{Kind: "nil", Line: c.line(e.Pos()), Text: text + " leaves its elements nil"}
		case *ast.MapType:
			return at("alloc")
		case *ast.Ident:
			st := c.structs[t.Name]
			if st == nil {
				return at("unsupported")
			}
			// A struct's pointee is that of its first pointer word, in field order.
			i := 0
			for _, f := range st.Fields.List {
				for _, name := range namesOf(f) {
					if c.hasPointer(f.Type) {
						return c.element(e, i, name)
					}
					i++
				}
			}
			return at("value")
		}
		return at("unsupported")
	case *ast.FuncLit:
		return at("alloc")
	case *ast.SliceExpr:
		// Slicing an array points into it: a local's address, or a global's.
		if id, ok := e.X.(*ast.Ident); ok {
			return c.addressOf(id)
		}
		return at("unsupported")
	case *ast.BinaryExpr:
		if e.Op == token.ADD && c.isString(e) {
			return at("alloc")
		}
		return at("value")
	}
	return at("unsupported")
}

// element is the origin of field number i (named name) of a struct literal.
func (c *corpus) element(lit *ast.CompositeLit, i int, name string) origin {
	for j, el := range lit.Elts {
		if kv, ok := el.(*ast.KeyValueExpr); ok {
			if exprString(kv.Key) == name {
				return c.origin(kv.Value)
			}
		} else if j == i {
			return c.origin(el)
		}
	}
	return origin{Kind: "nil", Line: c.line(lit.Pos()), Text: exprString(lit) + " leaves " + name + " nil"}
}

func (c *corpus) addressOf(id *ast.Ident) origin {
	text := "&" + id.Name
	if c.isGlobal(id) {
		return origin{Kind: "global", Name: id.Name, Text: text}
	}
	if id.Obj == nil {
		return origin{Kind: "unsupported", Text: text}
	}
	decl := declIdent(id)
	if decl == nil {
		return origin{Kind: "unsupported", Text: text}
	}
	return origin{Kind: "var", Name: id.Name, Line: c.line(decl.Pos()), Col: c.col(decl.Pos()), Text: text}
}

// declIdent finds the identifier that declares a local variable.
func declIdent(id *ast.Ident) *ast.Ident {
	var found *ast.Ident
	ast.Inspect(id.Obj.Decl.(ast.Node), func(n ast.Node) bool {
		if x, ok := n.(*ast.Ident); ok && found == nil && x.Obj == id.Obj && x.Name == id.Name {
			found = x
		}
		return found == nil
	})
	return found
}

func (c *corpus) initializer(id *ast.Ident) ast.Expr {
	switch d := id.Obj.Decl.(type) {
	case *ast.AssignStmt:
		if i := indexOf(d.Lhs, id.Name); i >= 0 && len(d.Rhs) == len(d.Lhs) {
			return d.Rhs[i]
		}
	case *ast.ValueSpec:
		for i, n := range d.Names {
			if n.Name == id.Name && i < len(d.Values) {
				return d.Values[i]
			}
		}
	}
	return nil
}

func (c *corpus) isGlobal(id *ast.Ident) bool {
	return id.Obj != nil && c.file.Scope.Objects[id.Name] == id.Obj
}

// isString tells whether an operand chain of + is a string: a string literal or a global
// initialised with one.
func (c *corpus) isString(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return e.Kind == token.STRING
	case *ast.BinaryExpr:
		return c.isString(e.X) || c.isString(e.Y)
	case *ast.Ident:
		if e.Obj != nil {
			if vs, ok := e.Obj.Decl.(*ast.ValueSpec); ok {
				for i, n := range vs.Names {
					if n.Name == e.Name && i < len(vs.Values) {
						return c.isString(vs.Values[i])
					}
				}
			}
		}
	}
	return false
}

// hasPointer tells, from a type's spelling, whether its values hold a pointer word.
func (c *corpus) hasPointer(t ast.Expr) bool {
	switch t := t.(type) {
	case *ast.StarExpr, *ast.MapType, *ast.ChanType, *ast.FuncType, *ast.InterfaceType:
		return true
	case *ast.ArrayType:
		return t.Len == nil || c.hasPointer(t.Elt)
	case *ast.Ident:
		switch t.Name {
		case "string", "any", "error":
			return true
		}
		if st := c.structs[t.Name]; st != nil {
			for _, f := range st.Fields.List {
				if c.hasPointer(f.Type) {
					return true
				}
			}
		}
	}
	return false
}

func namesOf(f *ast.Field) []string {
	if len(f.Names) == 0 {
		return []string{exprString(f.Type)}
	}
	var names []string
	for _, n := range f.Names {
		names = append(names, n.Name)
	}
	return names
}

func isPointer(t ast.Expr) bool {
	_, ok := t.(*ast.StarExpr)
	return ok
}

func noinline(d *ast.FuncDecl) bool {
	if d.Doc == nil {
		return false
	}
	for _, c := range d.Doc.List {
		if strings.HasPrefix(c.Text, "//go:noinline") {
			return true
		}
	}
	return false
}

func indexOf(list []ast.Expr, name string) int {
	for i, e := range list {
		if id, ok := e.(*ast.Ident); ok && id.Name == name {
			return i
		}
	}
	return -1
}

func values(m map[string]*ast.FuncDecl) []*ast.FuncDecl {
	var out []*ast.FuncDecl
	for _, d := range m {
		out = append(out, d)
	}
	return out
}

func exprString(e ast.Expr) string {
	if e == nil {
		return ""
	}
	return types.ExprString(e)
}

func (c *corpus) line(p token.Pos) int { return c.fset.Position(p).Line }
func (c *corpus) col(p token.Pos) int  { return c.fset.Position(p).Column }

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "callsites:", msg)
	os.Exit(1)
}
