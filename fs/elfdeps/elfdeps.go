// Package elfdeps reads, from the first bytes of an ELF executable or
// shared library, the shared libraries it needs (DT_NEEDED) and where it
// asks the dynamic loader to look for them (DT_RUNPATH, DT_RPATH), and
// lists the paths the loader would try.
//
// Why: a starting program's dynamic loader opens its libraries one after
// another, and each first read of a library not fetched yet is a round
// trip. The libraries a binary needs are written in its dynamic section,
// which sits in the first pages of the file, so they can be fetched side
// by side as soon as the binary's first chunk is in.
//
// It reads only through the program headers (at the start of the file),
// never the section headers (at its end), and treats its input as
// hostile: every offset is bounds-checked, and anything it cannot read is
// an error, never a panic.
package elfdeps

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Deps is what a binary's dynamic section says about its libraries.
type Deps struct {
	Machine elf.Machine
	Class   elf.Class
	Needed  []string // DT_NEEDED, in order
	RunPath []string // DT_RUNPATH, or DT_RPATH when there is none, split at ':'
}

// ErrNotELF is returned for a file that is not an ELF file.
var ErrNotELF = errors.New("not an ELF file")

// IsELF reports whether a file whose first bytes are head is an ELF file.
func IsELF(head []byte) bool { return bytes.HasPrefix(head, []byte(elf.ELFMAG)) }

// Limits that bound the work on hostile input.
const (
	maxProgs  = 256     // program headers read
	maxDyn    = 1 << 16 // dynamic entries read
	maxNeeded = 256     // DT_NEEDED entries kept
	maxStrLen = 4096    // bytes of one name
)

// segment is a PT_LOAD: virtual addresses [vaddr, vaddr+filesz) are the
// file's bytes [off, off+filesz).
type segment struct{ vaddr, off, filesz uint64 }

// Parse reads the dependencies of the ELF file r. A statically linked
// binary, or an ELF file without a dynamic section, has none.
func Parse(r io.ReaderAt) (Deps, error) {
	p, err := newParser(r)
	if err != nil {
		return Deps{}, err
	}
	// Only now, for an ELF file, are whole blocks read.
	p.r = newBlockReader(r)
	return p.parse()
}

// Loaded is how many of an ELF file's bytes the loader maps (its PT_LOAD
// segments), and how many of those it maps executable: its code.
type Loaded struct{ Code, All uint64 }

// ParseLoaded reads what r's loader maps, from its program headers only
// (which sit in its first bytes). It reads r once per header, with no
// blocks: it is meant for a head already in memory, on a read's path.
func ParseLoaded(r io.ReaderAt) (Loaded, error) {
	p, err := newParser(r)
	if err != nil {
		return Loaded{}, err
	}
	_, progs, err := p.progs()
	if err != nil {
		return Loaded{}, err
	}
	var l Loaded
	for _, pr := range progs {
		if pr.typ != elf.PT_LOAD {
			continue
		}
		if l.All+pr.seg.filesz < l.All {
			return Loaded{}, errors.New("loadable segments of more than 2^64 bytes")
		}
		l.All += pr.seg.filesz
		if pr.flags&elf.PF_X != 0 {
			l.Code += pr.seg.filesz
		}
	}
	return l, nil
}

// newParser reads r's identification and returns a parser reading r.
func newParser(r io.ReaderAt) (parser, error) {
	var ident [elf.EI_NIDENT]byte
	n, err := r.ReadAt(ident[:], 0)
	if !IsELF(ident[:n]) {
		return parser{}, ErrNotELF
	}
	if err != nil {
		return parser{}, fmt.Errorf("reading the ELF identification: %w", err)
	}
	var order binary.ByteOrder
	switch elf.Data(ident[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		order = binary.BigEndian
	default:
		return parser{}, fmt.Errorf("unknown ELF data encoding %d", ident[elf.EI_DATA])
	}
	p := parser{r: r, order: order, class: elf.Class(ident[elf.EI_CLASS])}
	switch p.class {
	case elf.ELFCLASS64, elf.ELFCLASS32:
	default:
		return parser{}, fmt.Errorf("unknown ELF class %d", ident[elf.EI_CLASS])
	}
	return p, nil
}

type parser struct {
	r     io.ReaderAt
	order binary.ByteOrder
	class elf.Class
}

func (p *parser) parse() (Deps, error) {
	machine, progs, err := p.progs()
	if err != nil {
		return Deps{}, err
	}
	var loads []segment
	var dynOff, dynSize uint64
	found := false
	for _, pr := range progs {
		switch pr.typ {
		case elf.PT_LOAD:
			loads = append(loads, pr.seg)
		case elf.PT_DYNAMIC:
			dynOff, dynSize, found = pr.seg.off, pr.seg.filesz, true
		}
	}
	d := Deps{Machine: machine, Class: p.class}
	if !found {
		return d, nil
	}
	return p.dynamic(d, loads, dynOff, dynSize)
}

// prog is one program header.
type prog struct {
	typ   elf.ProgType
	flags elf.ProgFlag
	seg   segment
}

// progs reads the ELF header's machine and the program headers.
func (p *parser) progs() (elf.Machine, []prog, error) {
	machine, phoff, phentsize, phnum, err := p.header()
	if err != nil {
		return 0, nil, err
	}
	if phnum > maxProgs {
		return 0, nil, fmt.Errorf("%d program headers, more than %d", phnum, maxProgs)
	}
	progs := make([]prog, phnum)
	for i := range progs {
		if progs[i], err = p.prog(phoff + uint64(i)*uint64(phentsize)); err != nil {
			return 0, nil, err
		}
	}
	return machine, progs, nil
}

// header reads the ELF header's machine and program header table.
func (p *parser) header() (machine elf.Machine, phoff uint64, phentsize, phnum uint16, err error) {
	if p.class == elf.ELFCLASS64 {
		var h elf.Header64
		if err := p.read(0, &h); err != nil {
			return 0, 0, 0, 0, fmt.Errorf("reading the ELF header: %w", err)
		}
		return elf.Machine(h.Machine), h.Phoff, h.Phentsize, h.Phnum, p.checkEntSize(h.Phentsize, 56)
	}
	var h elf.Header32
	if err := p.read(0, &h); err != nil {
		return 0, 0, 0, 0, fmt.Errorf("reading the ELF header: %w", err)
	}
	return elf.Machine(h.Machine), uint64(h.Phoff), h.Phentsize, h.Phnum, p.checkEntSize(h.Phentsize, 32)
}

func (p *parser) checkEntSize(got uint16, want int) error {
	if int(got) < want {
		return fmt.Errorf("program header entries of %d bytes, want %d", got, want)
	}
	return nil
}

// prog reads the program header at off.
func (p *parser) prog(off uint64) (prog, error) {
	if p.class == elf.ELFCLASS64 {
		var ph elf.Prog64
		if err := p.read(off, &ph); err != nil {
			return prog{}, fmt.Errorf("reading a program header: %w", err)
		}
		return prog{elf.ProgType(ph.Type), elf.ProgFlag(ph.Flags), segment{ph.Vaddr, ph.Off, ph.Filesz}}, nil
	}
	var ph elf.Prog32
	if err := p.read(off, &ph); err != nil {
		return prog{}, fmt.Errorf("reading a program header: %w", err)
	}
	return prog{elf.ProgType(ph.Type), elf.ProgFlag(ph.Flags), segment{uint64(ph.Vaddr), uint64(ph.Off), uint64(ph.Filesz)}}, nil
}

// dynamic reads the dynamic section at [off, off+size) and the names it
// points to in the string table.
func (p *parser) dynamic(d Deps, loads []segment, off, size uint64) (Deps, error) {
	entSize := uint64(16)
	if p.class == elf.ELFCLASS32 {
		entSize = 8
	}
	var needed []uint64
	var runpath, rpath, strtab uint64
	var haveRunpath, haveRpath, haveStrtab bool
entries:
	for i := uint64(0); i < min(size/entSize, maxDyn); i++ {
		tag, val, err := p.dyn(off + i*entSize)
		if err != nil {
			return d, err
		}
		switch elf.DynTag(tag) {
		case elf.DT_NULL:
			break entries
		case elf.DT_NEEDED:
			if len(needed) < maxNeeded {
				needed = append(needed, val)
			}
		case elf.DT_STRTAB:
			strtab, haveStrtab = val, true
		case elf.DT_RUNPATH:
			runpath, haveRunpath = val, true
		case elf.DT_RPATH:
			rpath, haveRpath = val, true
		}
	}
	if len(needed) == 0 {
		return d, nil
	}
	if !haveStrtab {
		return d, errors.New("a dynamic section with DT_NEEDED but no DT_STRTAB")
	}
	base, ok := fileOffset(loads, strtab)
	if !ok {
		return d, fmt.Errorf("the string table's address %#x is in no loaded segment", strtab)
	}
	for _, n := range needed {
		s, err := p.str(base, n)
		if err != nil {
			return d, err
		}
		d.Needed = append(d.Needed, s)
	}
	switch {
	case haveRunpath:
		d.RunPath, _ = p.pathList(base, runpath)
	case haveRpath:
		d.RunPath, _ = p.pathList(base, rpath)
	}
	return d, nil
}

// dyn reads the dynamic entry at off.
func (p *parser) dyn(off uint64) (tag int64, val uint64, err error) {
	if p.class == elf.ELFCLASS64 {
		var e elf.Dyn64
		if err := p.read(off, &e); err != nil {
			return 0, 0, fmt.Errorf("reading a dynamic entry: %w", err)
		}
		return e.Tag, e.Val, nil
	}
	var e elf.Dyn32
	if err := p.read(off, &e); err != nil {
		return 0, 0, fmt.Errorf("reading a dynamic entry: %w", err)
	}
	return int64(e.Tag), uint64(e.Val), nil
}

// fileOffset maps a virtual address to the file offset that holds it.
func fileOffset(loads []segment, vaddr uint64) (uint64, bool) {
	for _, s := range loads {
		if vaddr >= s.vaddr && vaddr-s.vaddr < s.filesz {
			return s.off + (vaddr - s.vaddr), true
		}
	}
	return 0, false
}

// str reads the NUL-terminated name at base+off.
func (p *parser) str(base, off uint64) (string, error) {
	if base+off < base {
		return "", errors.New("a name's offset overflows")
	}
	buf := make([]byte, maxStrLen)
	n, err := p.r.ReadAt(buf, int64(base+off))
	if i := bytes.IndexByte(buf[:n], 0); i >= 0 {
		return string(buf[:i]), nil
	}
	if err != nil {
		return "", fmt.Errorf("reading a name at %d: %w", base+off, err)
	}
	return "", fmt.Errorf("a name at %d longer than %d bytes", base+off, maxStrLen)
}

func (p *parser) pathList(base, off uint64) ([]string, error) {
	s, err := p.str(base, off)
	if err != nil || s == "" {
		return nil, err
	}
	return strings.Split(s, ":"), nil
}

// read decodes data (a fixed-size struct) at off.
func (p *parser) read(off uint64, data any) error {
	if int64(off) < 0 {
		return fmt.Errorf("offset %d out of range", off)
	}
	n := binary.Size(data)
	buf := make([]byte, n)
	if _, err := p.r.ReadAt(buf, int64(off)); err != nil {
		return err
	}
	_, err := binary.Decode(buf, p.order, data)
	return err
}

// SearchPaths returns, for each library d needs, the absolute paths the
// dynamic loader would try, in its order: a name with a slash as it is
// (relative to origin's directory when relative), else d's run path
// ($ORIGIN expanded to the directory of origin, the binary's absolute
// path; an entry with another token is skipped), then the default
// directories of glibc and musl, with Debian's multiarch directory for the
// binary's machine first. ld.so.cache is not read: it mostly lists the
// same directories.
func SearchPaths(d Deps, origin string) [][]string {
	dirs := runPathDirs(d.RunPath, path.Dir(origin))
	dirs = append(dirs, defaultDirs(d.Machine, d.Class)...)
	out := make([][]string, 0, len(d.Needed))
	for _, name := range d.Needed {
		var tries []string
		switch {
		case strings.HasPrefix(name, "/"):
			tries = []string{path.Clean(name)}
		case strings.Contains(name, "/"):
			if origin != "" {
				tries = []string{path.Join(path.Dir(origin), name)}
			}
		default:
			for _, dir := range dirs {
				tries = append(tries, path.Join(dir, name))
			}
		}
		out = append(out, tries)
	}
	return out
}

// UsesOrigin reports whether SearchPaths needs the binary's path for d: a
// run path with $ORIGIN, or a relative name with a slash.
func UsesOrigin(d Deps) bool {
	for _, dir := range d.RunPath {
		if strings.Contains(dir, "ORIGIN") {
			return true
		}
	}
	for _, name := range d.Needed {
		if strings.Contains(name, "/") && !strings.HasPrefix(name, "/") {
			return true
		}
	}
	return false
}

func runPathDirs(runpath []string, originDir string) []string {
	var dirs []string
	for _, dir := range runpath {
		for _, tok := range []string{"$ORIGIN", "${ORIGIN}"} {
			if strings.Contains(dir, tok) {
				if originDir == "" || originDir == "." {
					dir = ""
					break
				}
				dir = strings.ReplaceAll(dir, tok, originDir)
			}
		}
		if dir == "" || strings.Contains(dir, "$") || !strings.HasPrefix(dir, "/") {
			continue
		}
		dirs = append(dirs, path.Clean(dir))
	}
	return dirs
}

// multiarch names Debian's library directory of a machine, "" for none.
func multiarch(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86_64-linux-gnu"
	case elf.EM_AARCH64:
		return "aarch64-linux-gnu"
	case elf.EM_386:
		return "i386-linux-gnu"
	case elf.EM_ARM:
		return "arm-linux-gnueabihf"
	case elf.EM_PPC64:
		return "powerpc64le-linux-gnu"
	case elf.EM_S390:
		return "s390x-linux-gnu"
	case elf.EM_RISCV:
		return "riscv64-linux-gnu"
	}
	return ""
}

func defaultDirs(m elf.Machine, c elf.Class) []string {
	var dirs []string
	if t := multiarch(m); t != "" {
		dirs = append(dirs, "/lib/"+t, "/usr/lib/"+t)
	}
	if c == elf.ELFCLASS64 {
		dirs = append(dirs, "/lib64", "/usr/lib64")
	}
	return append(dirs, "/lib", "/usr/lib", "/usr/local/lib")
}
