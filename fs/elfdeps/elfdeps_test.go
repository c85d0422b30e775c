package elfdeps

import (
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// hostELFs returns some of this machine's dynamically linked binaries and
// libraries: real inputs, whose libraries debug/elf reads from their
// section headers for comparison.
func hostELFs(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, pattern := range []string{"/usr/bin/*", "/usr/lib/x86_64-linux-gnu/*.so.*", "/usr/lib/aarch64-linux-gnu/*.so.*"} {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
				continue
			}
			f, err := elf.Open(p)
			if err != nil {
				continue
			}
			libs, err := f.ImportedLibraries()
			f.Close()
			if err == nil && len(libs) > 0 {
				out = append(out, p)
			}
		}
	}
	if len(out) < 5 {
		t.Skipf("only %d dynamically linked ELF files found on this machine", len(out))
	}
	return out
}

// TestParseAgreesWithDebugELF: on real binaries, the libraries read
// through the program headers alone are those debug/elf reads through the
// section headers, in the same order.
func TestParseAgreesWithDebugELF(t *testing.T) {
	t.Parallel()
	for _, p := range hostELFs(t) {
		f, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		want, err := f.ImportedLibraries()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		r, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(r)
		r.Close()
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if !slices.Equal(got.Needed, want) {
			t.Errorf("%s: needs %q, debug/elf says %q", p, got.Needed, want)
		}
	}
}

// TestParseHead: the libraries are read from a binary's first bytes only,
// as a layer has them when its first chunk is in; a head too short for
// them is an error, not a guess.
func TestParseHead(t *testing.T) {
	t.Parallel()
	paths := hostELFs(t)
	p := paths[0]
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	full, err := Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	head := data[:min(len(data), 4<<20)]
	got, err := Parse(bytes.NewReader(head))
	if err != nil || !slices.Equal(got.Needed, full.Needed) {
		t.Errorf("%s from its first %d bytes: %q, %v; want %q", p, len(head), got.Needed, err, full.Needed)
	}
	if _, err := Parse(bytes.NewReader(data[:100])); err == nil {
		t.Errorf("%s from its first 100 bytes: no error", p)
	}
}

func TestParseNotELF(t *testing.T) {
	t.Parallel()
	if _, err := Parse(bytes.NewReader([]byte("#!/bin/sh\necho hi\n"))); !errors.Is(err, ErrNotELF) {
		t.Errorf("a script: %v, want ErrNotELF", err)
	}
}

// TestParseStatic: an ELF file without a dynamic section (this test's own
// binary, linked statically by Go when cgo is off) needs nothing.
func TestParseStatic(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Section(".dynamic") != nil {
		t.Skip("the test binary is dynamically linked")
	}
	r, _ := os.Open(exe)
	defer r.Close()
	d, err := Parse(r)
	if err != nil || len(d.Needed) != 0 {
		t.Errorf("a static binary: %q, %v; want nothing", d.Needed, err)
	}
}

func TestSearchPaths(t *testing.T) {
	t.Parallel()
	d := Deps{
		Machine: elf.EM_X86_64, Class: elf.ELFCLASS64,
		Needed:  []string{"libjli.so", "/opt/lib/libx.so", "sub/liby.so"},
		RunPath: []string{"$ORIGIN/../lib", "${LIB}/skipped", "relative/skipped"},
	}
	got := SearchPaths(d, "/usr/lib/jvm/bin/java")
	want := [][]string{
		{"/usr/lib/jvm/lib/libjli.so", "/lib/x86_64-linux-gnu/libjli.so", "/usr/lib/x86_64-linux-gnu/libjli.so",
			"/lib64/libjli.so", "/usr/lib64/libjli.so", "/lib/libjli.so", "/usr/lib/libjli.so", "/usr/local/lib/libjli.so"},
		{"/opt/lib/libx.so"},
		{"/usr/lib/jvm/bin/sub/liby.so"},
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("SearchPaths = %q\nwant %q", got, want)
	}
	if got := SearchPaths(d, ""); got[0][0] != "/lib/x86_64-linux-gnu/libjli.so" || len(got[2]) != 0 {
		t.Errorf("without the binary's path, $ORIGIN and relative names must be skipped: %q", got)
	}
}

// FuzzParse: hostile input gets an error or an answer, never a panic or
// a hang.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"/usr/bin/ls", "/usr/bin/bash", "/usr/lib/x86_64-linux-gnu/libc.so.6"} {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data[:min(len(data), 16<<10)])
		}
	}
	f.Add([]byte(elf.ELFMAG))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse(bytes.NewReader(data))
		if err == nil && len(d.Needed) > maxNeeded {
			t.Errorf("%d names, more than %d", len(d.Needed), maxNeeded)
		}
	})
}

// countingReader counts the reads that reach the file.
type countingReader struct {
	r     io.ReaderAt
	reads int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	return c.r.ReadAt(p, off)
}

// TestParseReadsFewBlocks: a binary's headers, dynamic section and names
// take a few reads of the file (each one a cache lookup in a layer), not
// one per program header, entry and name.
func TestParseReadsFewBlocks(t *testing.T) {
	t.Parallel()
	for _, p := range hostELFs(t)[:5] {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		c := &countingReader{r: bytes.NewReader(data)}
		d, err := Parse(c)
		if err != nil || len(d.Needed) == 0 {
			t.Fatalf("%s: %q, %v", p, d.Needed, err)
		}
		if c.reads > 6 {
			t.Errorf("%s: %d reads of the file for %d libraries, want at most 6", p, c.reads, len(d.Needed))
		}
	}
}

// TestParseLoadedAgreesWithDebugELF: on real binaries and libraries, the
// loaded and executable bytes read from the first 4 KiB (where the program
// headers are) are those debug/elf reads from the whole file.
func TestParseLoadedAgreesWithDebugELF(t *testing.T) {
	t.Parallel()
	paths := hostELFs(t)
	for _, p := range paths {
		f, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		var want Loaded
		for _, pr := range f.Progs {
			if pr.Type == elf.PT_LOAD {
				want.All += pr.Filesz
				if pr.Flags&elf.PF_X != 0 {
					want.Code += pr.Filesz
				}
			}
		}
		f.Close()
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseLoaded(bytes.NewReader(data[:min(len(data), 4096)]))
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v; debug/elf says %+v", p, got, err, want)
		}
		if want.Code == 0 || want.Code > want.All {
			t.Errorf("%s: %+v: a binary with no code, or more code than it loads", p, want)
		}
	}
	if _, err := ParseLoaded(bytes.NewReader([]byte("#!/bin/sh\n"))); !errors.Is(err, ErrNotELF) {
		t.Errorf("a script: %v, want ErrNotELF", err)
	}
	data, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseLoaded(bytes.NewReader(data[:80])); err == nil {
		t.Error("program headers cut short: no error")
	}
}

// FuzzParseLoaded: hostile input gets an error or an answer, never a
// panic, and never more code than is loaded.
func FuzzParseLoaded(f *testing.F) {
	if data, err := os.ReadFile("/usr/bin/ls"); err == nil {
		f.Add(data[:min(len(data), 4096)])
	}
	f.Add([]byte(elf.ELFMAG))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseLoaded(bytes.NewReader(data))
		if err == nil && l.Code > l.All {
			t.Errorf("%+v", l)
		}
	})
}
