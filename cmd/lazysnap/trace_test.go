package main

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/fs/trace"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// TestTraceExport exports a saved trace in the format lazyconv reads, and
// fails with a clear error for an image without one.
func TestTraceExport(t *testing.T) {
	root := t.TempDir()
	r := trace.NewRecorder("reg/app:v1", 10)
	r.Record("/usr/bin/app")
	r.Record("/etc/app.conf")
	r.AddRanges("/usr/bin/app", []prefetchlist.Range{{Start: 0, End: 4 << 20}})
	if err := trace.Dir(traceDir(root)).Save(r); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "trace", "export", "--root", root, "reg/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	p, err := trace.Read(strings.NewReader(out))
	if err != nil || strings.Join(p.Paths, ",") != "/usr/bin/app,/etc/app.conf" {
		t.Fatalf("exported %q (%v)", out, err)
	}
	if want := map[string][]prefetchlist.Range{"/usr/bin/app": {{Start: 0, End: 4 << 20}}}; !reflect.DeepEqual(p.Ranges, want) {
		t.Fatalf("exported ranges %v, want %v", p.Ranges, want)
	}
	if out, err := runCLI(t, "trace", "list", "--root", root); err != nil || out != "reg/app:v1\n" {
		t.Fatalf("trace list = %q, %v", out, err)
	}
	if _, err := runCLI(t, "trace", "export", "--root", root, "other:v1"); err == nil ||
		!strings.Contains(err.Error(), "no trace recorded") {
		t.Fatalf("export of an image without trace: %v", err)
	}
}

// runCLI runs `lazysnap trace` with args[1:] (args[0] is "trace") and
// returns its standard output.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newTraceCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs(args[1:])
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}
