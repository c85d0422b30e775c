package trace

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

func TestRecorderDedupAndBound(t *testing.T) {
	r := NewRecorder("img", 3)
	for _, p := range []string{"a", "/b", "/a", "b/../c", "/d", "/e"} {
		r.Record(p)
	}
	if got, want := r.Paths(), []string{"/a", "/b", "/c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("paths %v, want %v", got, want)
	}
	if r.Dropped() != 2 {
		t.Errorf("dropped %d, want 2", r.Dropped())
	}
}

// TestRecorderSkipsUnlistable: a file name with a newline is not recorded,
// so it can neither inject a line into the saved trace nor fail the save.
func TestRecorderSkipsUnlistable(t *testing.T) {
	d := Dir(t.TempDir())
	r := NewRecorder("img", 10)
	r.Record("/a\n/etc/shadow")
	r.Record("/b")
	if err := d.Save(r); err != nil {
		t.Fatal(err)
	}
	p, err := d.Load("img")
	if err != nil || !reflect.DeepEqual(p.Paths, []string{"/b"}) {
		t.Fatalf("loaded %+v, %v", p, err)
	}
}

func TestRoundTrip(t *testing.T) {
	d := Dir(t.TempDir())
	r := NewRecorder("reg/app:v1", 10)
	r.Record("/usr/bin/app")
	r.Record("/etc/with space")
	if err := d.Save(r); err != nil {
		t.Fatal(err)
	}
	p, err := d.Load("reg/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/usr/bin/app", "/etc/with space"}; !reflect.DeepEqual(p.Paths, want) || p.Image != "reg/app:v1" {
		t.Fatalf("loaded %+v", p)
	}
	images, err := d.List()
	if err != nil || !reflect.DeepEqual(images, []string{"reg/app:v1"}) {
		t.Fatalf("List = %v, %v", images, err)
	}
}

// TestBadInput: damaged, empty, foreign and missing traces give warnings or
// categorized errors, never a crash.
func TestBadInput(t *testing.T) {
	p, err := Read(strings.NewReader("../garbage\n/ok\n\x00bad\n/ok\n#c\n\n/also ok\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/ok", "/also ok"}; !reflect.DeepEqual(p.Paths, want) || len(p.Warnings) != 3 {
		t.Fatalf("parsed %+v", p)
	}
	if p, err := Read(strings.NewReader("")); err != nil || len(p.Paths) != 0 {
		t.Fatalf("empty trace: %+v, %v", p, err)
	}
	if _, err := Read(strings.NewReader("/" + strings.Repeat("x", prefetchlist.MaxLine))); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("overlong line: %v", err)
	}

	d := Dir(t.TempDir())
	if _, err := d.Load("missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing trace: %v", err)
	}
	other := NewRecorder("other", 10)
	other.Record("/x")
	if err := d.Save(other); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(d.File("other"), d.File("mine")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Load("mine"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("foreign trace: %v", err)
	}
	r, warnings := d.Resume("mine", 10)
	if len(r.Paths()) != 0 || len(warnings) == 0 {
		t.Errorf("resuming a foreign trace kept %v, warned %v", r.Paths(), warnings)
	}
}

// TestRangesSavedAndResumed: the ranges read of a file are saved with its
// path, and a resumed trace keeps them and adds those read since (the
// union), saving again only when that changes them.
func TestRangesSavedAndResumed(t *testing.T) {
	d := Dir(t.TempDir())
	r := NewRecorder("img", 10)
	r.Record("/lib/modules")
	r.Record("/bin/java")
	r.AddRanges("/lib/modules", []prefetchlist.Range{rg(0, 4<<20)})
	r.AddRanges("/never/opened", []prefetchlist.Range{rg(0, 1)}) // not recorded: dropped
	if err := d.Save(r); err != nil {
		t.Fatal(err)
	}
	p, err := d.Load("img")
	if want := map[string][]prefetchlist.Range{"/lib/modules": {rg(0, 4<<20)}}; err != nil || !reflect.DeepEqual(p.Ranges, want) {
		t.Fatalf("loaded ranges %v, %v; want %v", p.Ranges, err, want)
	}

	resumed, warnings := d.Resume("img", 10)
	if len(warnings) != 0 {
		t.Fatal(warnings)
	}
	resumed.AddRanges("/lib/modules", []prefetchlist.Range{rg(0, 1<<20)}) // inside: nothing new
	if _, _, dirty := resumed.snapshot(); dirty {
		t.Error("ranges already recorded made the trace dirty")
	}
	resumed.AddRanges("/lib/modules", []prefetchlist.Range{rg(4<<20, 8<<20), rg(32<<20, 36<<20)})
	resumed.AddRanges("/bin/java", []prefetchlist.Range{rg(0, 2<<20)})
	if err := d.Save(resumed); err != nil {
		t.Fatal(err)
	}
	p, err = d.Load("img")
	want := map[string][]prefetchlist.Range{
		"/lib/modules": {rg(0, 8<<20), rg(32<<20, 36<<20)},
		"/bin/java":    {rg(0, 2<<20)},
	}
	if err != nil || !reflect.DeepEqual(p.Ranges, want) || !reflect.DeepEqual(p.Paths, []string{"/lib/modules", "/bin/java"}) {
		t.Fatalf("resumed trace %+v, %v; want ranges %v", p, err, want)
	}
}

func rg(start, end int64) prefetchlist.Range { return prefetchlist.Range{Start: start, End: end} }
