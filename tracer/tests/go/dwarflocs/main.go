// dwarflocs prints, for every function of package main in a Go binary, each parameter as the
// compiler described it in DWARF: its name, its type, whether it holds a pointer word, and where
// it is at the function's first instruction (registers, or an offset from the call frame).
// The params test uses it as the compiler's own word on how parameters arrive, independent of
// escapade's ABI code. One JSON object per function on stdout.
//
// Usage: dwarflocs <binary>
package main

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type param struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Pointer  bool   `json:"pointer"`
	Location string `json:"location"`
}

type function struct {
	Function string  `json:"function"`
	Params   []param `json:"params"`
}

// DW_AT_go_kind: the reflect.Kind the Go compiler attaches to its types.
const attrGoKind = dwarf.Attr(0x2900)

// reflect.Kind values of the kinds whose values are, or start with, a pointer word.
var pointerKinds = map[int64]bool{18: true, 19: true, 20: true, 21: true, 22: true, 23: true, 24: true, 26: true}

const (
	kindArray  = 17
	kindStruct = 25
)

func main() {
	if len(os.Args) != 2 {
		fail("usage: dwarflocs <binary>")
	}
	f, err := elf.Open(os.Args[1])
	check(err)
	d, err := f.DWARF()
	check(err)
	locs := locations{
		loc:      sectionData(f, ".debug_loc"),
		loclists: sectionData(f, ".debug_loclists"),
		addr:     sectionData(f, ".debug_addr"),
	}
	out := json.NewEncoder(os.Stdout)

	r := d.Reader()
	var cuBase uint64
	for {
		e, err := r.Next()
		check(err)
		if e == nil {
			break
		}
		switch e.Tag {
		case dwarf.TagCompileUnit:
			cuBase, _ = e.Val(dwarf.AttrLowpc).(uint64)
			locs.addrBase, _ = e.Val(dwarf.AttrAddrBase).(int64)
			continue
		case dwarf.TagSubprogram:
		default:
			r.SkipChildren()
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		lowpc, ok := e.Val(dwarf.AttrLowpc).(uint64)
		if !strings.HasPrefix(name, "main.") || !ok || !e.Children {
			r.SkipChildren()
			continue
		}
		fn := function{Function: name, Params: []param{}}
		for {
			c, err := r.Next()
			check(err)
			if c == nil || c.Tag == 0 {
				break
			}
			if c.Children {
				r.SkipChildren()
			}
			if c.Tag != dwarf.TagFormalParameter {
				continue
			}
			if isResult, _ := c.Val(dwarf.AttrVarParam).(bool); isResult {
				continue
			}
			p := param{}
			p.Name, _ = c.Val(dwarf.AttrName).(string)
			if off, ok := c.Val(dwarf.AttrType).(dwarf.Offset); ok {
				t, err := d.Type(off)
				check(err)
				p.Type = t.String()
				p.Pointer = hasPointer(d, off)
			}
			p.Location = locs.atEntry(c.AttrField(dwarf.AttrLocation), cuBase, lowpc)
			fn.Params = append(fn.Params, p)
		}
		check(out.Encode(fn))
	}
}

// hasPointer says whether a value of the type at off holds a pointer word, by its Go kind:
// pointers, maps, chans, funcs, interfaces, strings, slices, unsafe.Pointer, and arrays and
// structs holding one of those.
func hasPointer(d *dwarf.Data, off dwarf.Offset) bool {
	e := entryAt(d, off)
	kind, _ := e.Val(attrGoKind).(int64)
	switch {
	case pointerKinds[kind]:
		return true
	case kind == kindArray:
		// The length sits in a subrange child, which debug/dwarf's ArrayType has read.
		t, err := d.Type(off)
		check(err)
		a, ok := t.(*dwarf.ArrayType)
		elem, hasElem := e.Val(dwarf.AttrType).(dwarf.Offset)
		return ok && a.Count > 0 && hasElem && hasPointer(d, elem)
	case kind == kindStruct:
		r := d.Reader()
		r.Seek(off)
		_, err := r.Next()
		check(err)
		for {
			c, err := r.Next()
			check(err)
			if c == nil || c.Tag == 0 {
				return false
			}
			if c.Tag == dwarf.TagMember {
				if t, ok := c.Val(dwarf.AttrType).(dwarf.Offset); ok && hasPointer(d, t) {
					return true
				}
			}
			if c.Children {
				r.SkipChildren()
			}
		}
	case kind == 0 && e.Tag == dwarf.TagTypedef:
		// Typedefs without a kind stand for the type they name.
		if t, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
			return hasPointer(d, t)
		}
	}
	return false
}

func entryAt(d *dwarf.Data, off dwarf.Offset) *dwarf.Entry {
	r := d.Reader()
	r.Seek(off)
	e, err := r.Next()
	check(err)
	if e == nil {
		fail(fmt.Sprintf("no DWARF entry at %#x", off))
	}
	return e
}

type locations struct {
	loc, loclists, addr []byte
	// The current unit's first entry in .debug_addr (DWARF 5).
	addrBase int64
}

// atEntry describes where a parameter is at the function's first instruction: its location
// expression, or the one of its location-list ranges that covers lowpc.
func (l locations) atEntry(f *dwarf.Field, cuBase, lowpc uint64) string {
	if f == nil {
		return "none"
	}
	if b, ok := f.Val.([]byte); ok && len(b) == 0 {
		return "none"
	}
	switch f.Class {
	case dwarf.ClassExprLoc:
		return describe(f.Val.([]byte))
	case dwarf.ClassLocListPtr, dwarf.ClassLocList:
		// Go writes either DWARF 4 (.debug_loc) or, from 1.25, DWARF 5 (.debug_loclists),
		// never both; debug/dwarf does not say which version a unit is.
		off := f.Val.(int64)
		switch {
		case l.loc != nil && l.loclists == nil:
			return describeOrNone(l.fromLoc(off, cuBase, lowpc))
		case l.loclists != nil && l.loc == nil:
			return describeOrNone(l.fromLoclists(off, cuBase, lowpc))
		}
		return "unsupported(both or neither of .debug_loc and .debug_loclists)"
	}
	return fmt.Sprintf("unsupported(class %v)", f.Class)
}

func describeOrNone(expr []byte) string {
	if expr == nil {
		return "none"
	}
	return describe(expr)
}

// fromLoc walks a DWARF 4 location list in .debug_loc.
func (l locations) fromLoc(off int64, base, pc uint64) []byte {
	b := l.loc[off:]
	for len(b) >= 16 {
		start, end := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
		b = b[16:]
		switch {
		case start == 0 && end == 0:
			return nil
		case start == ^uint64(0):
			base = end
			continue
		}
		n := int(binary.LittleEndian.Uint16(b))
		expr := b[2 : 2+n]
		b = b[2+n:]
		if base+start <= pc && pc < base+end {
			return expr
		}
	}
	return nil
}

// fromLoclists walks a DWARF 5 location list in .debug_loclists.
func (l locations) fromLoclists(off int64, base, pc uint64) []byte {
	r := bytes.NewReader(l.loclists[off:])
	for {
		kind, err := r.ReadByte()
		check(err)
		var start, end uint64
		switch kind {
		case 0: // DW_LLE_end_of_list
			return nil
		case 1: // DW_LLE_base_addressx
			base = l.indexed(uleb(r))
			continue
		case 2: // DW_LLE_startx_endx
			start, end = l.indexed(uleb(r)), l.indexed(uleb(r))
		case 3: // DW_LLE_startx_length
			start = l.indexed(uleb(r))
			end = start + uleb(r)
		case 4: // DW_LLE_offset_pair
			start, end = base+uleb(r), base+uleb(r)
		case 6: // DW_LLE_base_address
			base = u64(r)
			continue
		case 7: // DW_LLE_start_end
			start, end = u64(r), u64(r)
		case 8: // DW_LLE_start_length
			start = u64(r)
			end = start + uleb(r)
		default:
			fail(fmt.Sprintf("location list entry kind %d not supported", kind))
		}
		expr := make([]byte, uleb(r))
		_, err = r.Read(expr)
		check(err)
		if start <= pc && pc < end {
			return expr
		}
	}
}

// indexed reads entry i of the unit's addresses in .debug_addr.
func (l locations) indexed(i uint64) uint64 {
	return binary.LittleEndian.Uint64(l.addr[uint64(l.addrBase)+8*i:])
}

var registers = []string{"RAX", "RDX", "RCX", "RBX", "RSI", "RDI", "RBP", "RSP",
	"R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15", "RIP"}

func register(n uint64) string {
	switch {
	case n < uint64(len(registers)):
		return registers[n]
	case n >= 17 && n <= 32:
		return fmt.Sprintf("X%d", n-17)
	}
	return fmt.Sprintf("reg%d", n)
}

// describe renders the location expressions Go emits for parameters: registers joined by
// pieces ("RAX+RBX"), or an offset from the call frame ("stack+8").
func describe(expr []byte) string {
	r := bytes.NewReader(expr)
	var parts []string
	for r.Len() > 0 {
		op, _ := r.ReadByte()
		switch {
		case op >= 0x50 && op <= 0x6f: // DW_OP_reg0..31
			parts = append(parts, register(uint64(op-0x50)))
		case op == 0x90: // DW_OP_regx
			parts = append(parts, register(uleb(r)))
		case op == 0x93: // DW_OP_piece
			uleb(r)
		case op == 0x9c: // DW_OP_call_frame_cfa, then an offset or none
			off := int64(0)
			if r.Len() > 0 {
				next, _ := r.ReadByte()
				switch next {
				case 0x11: // DW_OP_consts, DW_OP_plus
					off = sleb(r)
					if plus, _ := r.ReadByte(); plus != 0x22 {
						return fmt.Sprintf("unsupported(% x)", expr)
					}
				case 0x23: // DW_OP_plus_uconst
					off = int64(uleb(r))
				default:
					return fmt.Sprintf("unsupported(% x)", expr)
				}
			}
			parts = append(parts, fmt.Sprintf("stack+%d", off))
		case op == 0x91: // DW_OP_fbreg
			parts = append(parts, fmt.Sprintf("stack+%d", sleb(r)))
		default:
			return fmt.Sprintf("unsupported(% x)", expr)
		}
	}
	return strings.Join(parts, "+")
}

func sectionData(f *elf.File, name string) []byte {
	s := f.Section(name)
	if s == nil {
		return nil
	}
	b, err := s.Data()
	check(err)
	return b
}

func uleb(r *bytes.Reader) uint64 {
	var v uint64
	for shift := 0; ; shift += 7 {
		b, err := r.ReadByte()
		check(err)
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v
		}
	}
}

func sleb(r *bytes.Reader) int64 {
	var v int64
	shift := 0
	for {
		b, err := r.ReadByte()
		check(err)
		v |= int64(b&0x7f) << shift
		shift += 7
		if b < 0x80 {
			if shift < 64 && b&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
}

func u64(r *bytes.Reader) uint64 {
	var b [8]byte
	_, err := r.Read(b[:])
	check(err)
	return binary.LittleEndian.Uint64(b[:])
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "dwarflocs:", msg)
	os.Exit(1)
}
