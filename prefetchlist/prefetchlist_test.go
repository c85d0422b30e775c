package prefetchlist

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestRoundTrip(t *testing.T) {
	paths := []string{"/bin/busybox", "/etc/app config.yaml", "/usr/lib/libc.so.6", "/#not-a-comment", "/é"}
	var buf bytes.Buffer
	if err := Write(&buf, []string{"lazysnap trace", "image: reg/app:v1"}, paths); err != nil {
		t.Fatal(err)
	}
	got, err := Read(&buf)
	if err != nil || len(got.Rejected) != 0 {
		t.Fatalf("Read: %v, rejected %v", err, got.Rejected)
	}
	if !slices.Equal(got.Paths, paths) {
		t.Errorf("paths %q, want %q", got.Paths, paths)
	}
	if want := []string{"lazysnap trace", "image: reg/app:v1"}; !slices.Equal(got.Comments, want) {
		t.Errorf("comments %q, want %q", got.Comments, want)
	}
}

// TestReadLenient: inputs the three former readers accepted keep working.
func TestReadLenient(t *testing.T) {
	in := strings.Join([]string{
		"# comment",
		"",
		"   ",
		"usr/bin/env",   // relative: from the root (convert --prioritize took these)
		"  /etc/hosts ", // surrounding space
		"//etc//hosts/", // a repeat once cleaned
		"./bin/sh",
		"\t# indented comment",
		"/lib/a b\r", // a CRLF list
	}, "\n")
	got, err := Read(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/usr/bin/env", "/etc/hosts", "/bin/sh", "/lib/a b"}; !slices.Equal(got.Paths, want) {
		t.Errorf("paths %q, want %q", got.Paths, want)
	}
	if len(got.Rejected) != 1 || got.Rejected[0].Line != 6 {
		t.Errorf("rejected %v, want line 6 as a repeat", got.Rejected)
	}
}

func TestReadRejectsHostileLines(t *testing.T) {
	in := "../../etc/shadow\n/a/../../b\n/\n/nul\x00byte\n/ok\n"
	got, err := Read(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Paths, []string{"/ok"}) {
		t.Errorf("paths %q, want only /ok", got.Paths)
	}
	var lines []int
	for _, r := range got.Rejected {
		lines = append(lines, r.Line)
	}
	if want := []int{1, 2, 3, 4}; !slices.Equal(lines, want) {
		t.Errorf("rejected lines %v (%v), want %v", lines, got.Rejected, want)
	}
}

func TestReadOverlongLine(t *testing.T) {
	got, err := Read(strings.NewReader("/first\n/" + strings.Repeat("x", MaxLine)))
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("overlong line: %v", err)
	}
	if !slices.Equal(got.Paths, []string{"/first"}) {
		t.Errorf("kept %q before the overlong line", got.Paths)
	}
}

// TestWriteCannotInjectLines: a file name holding a line break never
// becomes a second entry; Write refuses it and writes nothing.
func TestWriteCannotInjectLines(t *testing.T) {
	for _, p := range []string{"/a\n/etc/shadow", "/a\r/b", "/a\n# c", "relative", "/trailing ", "/nbsp\u00a0", "/a/../b", "/", "", "/nul\x00"} {
		var buf bytes.Buffer
		if err := Write(&buf, nil, []string{"/fine", p}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Write(%q) = %v, want ErrInvalidArgument", p, err)
		}
		if buf.Len() != 0 {
			t.Errorf("Write(%q) wrote %q", p, buf.String())
		}
		if Valid(p) {
			t.Errorf("Valid(%q) = true", p)
		}
	}
	var buf bytes.Buffer
	if err := Write(&buf, []string{"image: x\n/etc/shadow"}, nil); !errors.Is(err, errdefs.ErrInvalidArgument) || buf.Len() != 0 {
		t.Errorf("a comment with a newline: %v, wrote %q", err, buf.String())
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("/a b")
	f.Add("/x\ny")
	f.Fuzz(func(t *testing.T, p string) {
		var buf bytes.Buffer
		if err := Write(&buf, nil, []string{p}); err != nil {
			return
		}
		got, err := Read(&buf)
		if err != nil || !slices.Equal(got.Paths, []string{p}) {
			t.Fatalf("%q read back as %q, %v", p, got.Paths, err)
		}
	})
}
