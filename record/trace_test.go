package record

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestTraceRoundTrip(t *testing.T) {
	tr := Trace{"/bin/busybox", "/etc/app config.yaml", "/usr/lib/libc.so.6", "/#not-a-comment"}
	var buf bytes.Buffer
	if _, err := tr.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got, rejected, err := ParseList(&buf)
	if err != nil || len(rejected) != 0 {
		t.Fatalf("ParseList: %v, rejected %v", err, rejected)
	}
	if !slices.Equal(got, tr) {
		t.Errorf("round trip gave %q, want %q", got, tr)
	}
}

func TestParseListHostileLines(t *testing.T) {
	in := strings.Join([]string{
		"# comment",
		"",
		"   ",
		"usr/bin/env",   // relative: from the root
		"  /etc/hosts ", // surrounding space
		"../../etc/shadow",
		"/a/../../b",
		"/",
		"//etc//hosts/", // duplicate once cleaned
		"./bin/sh",
		"\t# indented comment",
	}, "\n")
	got, rejected, err := ParseList(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Trace{"/usr/bin/env", "/etc/hosts", "/bin/sh"}); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	var lines []int
	for _, r := range rejected {
		lines = append(lines, r.Line)
	}
	if want := []int{6, 7, 8}; !slices.Equal(lines, want) {
		t.Errorf("rejected lines %v (%v), want %v", lines, rejected, want)
	}
}

func TestParseListEmpty(t *testing.T) {
	got, rejected, err := ParseList(strings.NewReader("# nothing recorded\n\n"))
	if err != nil || len(got) != 0 || len(rejected) != 0 {
		t.Errorf("got %q %v %v, want an empty trace", got, rejected, err)
	}
}

func TestListable(t *testing.T) {
	for p, want := range map[string]bool{
		"/a b":        true,
		"/a\nb":       false,
		"/trailing ":  false,
		"/nbsp\u00a0": false,
		"/é":          true,
		"":            false,
	} {
		if got := listable(p); got != want {
			t.Errorf("listable(%q) = %v, want %v", p, got, want)
		}
	}
}
