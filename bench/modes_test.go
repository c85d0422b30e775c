package bench

import (
	"strings"
	"testing"
)

func TestParseModes(t *testing.T) {
	got, err := ParseModes("overlayfs, lazysnap,stargz,stargz-optimized")
	if err != nil {
		t.Fatal(err)
	}
	want := []Mode{Overlayfs, Lazy, Stargz, StargzOptimized}
	if len(got) != len(want) {
		t.Fatalf("ParseModes = %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ParseModes = %v; want %v", got, want)
		}
	}
	if _, err := ParseModes("nydus"); err == nil || !strings.Contains(err.Error(), "stargz-optimized") {
		t.Errorf("ParseModes(nydus) error = %v; want one naming the known modes", err)
	}
}

// TestStargzModes checks what a stargz case runs: the peer as its own
// proxy plugin, never lazysnap, and the images it shares or not.
func TestStargzModes(t *testing.T) {
	for _, m := range []Mode{Stargz, StargzOptimized} {
		if m.snapshotter() != stargzSnapshotter || !m.usesStargz() || m.usesLazysnap() {
			t.Errorf("%s: snapshotter %q, usesStargz %v, usesLazysnap %v", m, m.snapshotter(), m.usesStargz(), m.usesLazysnap())
		}
	}
	if Stargz.conversion() != Lazy.conversion() {
		t.Errorf("stargz converts to %q, lazysnap to %q: they should share the plain eStargz image",
			Stargz.conversion(), Lazy.conversion())
	}
	if StargzOptimized.conversion() == Optimized.conversion() {
		t.Errorf("stargz-optimized shares lazyconv's optimized conversion; it should be the peer's own")
	}
}

func TestDefaultWorkloadNames(t *testing.T) {
	for _, name := range []string{"python", "gcc", "redis", "scipy", "jvm", "node"} {
		w, ok := findWorkload(DefaultWorkloads(), name)
		if !ok {
			t.Errorf("no default workload %q", name)
			continue
		}
		if err := w.Ready.validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestHeldOutWorkloads: a held-out image is chosen by name, is not in the
// default set (nor so in -full), and its name is no default one's.
func TestHeldOutWorkloads(t *testing.T) {
	for _, w := range HeldOutWorkloads() {
		if _, ok := findWorkload(DefaultWorkloads(), w.Name); ok {
			t.Errorf("%s is both held out and in the default set", w.Name)
		}
		if err := w.Ready.validate(); err != nil {
			t.Errorf("%s: %v", w.Name, err)
		}
		got, err := (&benchFlags{images: w.Name}).workloads()
		if err != nil || len(got) != 1 || got[0].Name != w.Name {
			t.Errorf("-images %s chose %v, %v", w.Name, got, err)
		}
	}
	full, err := (&benchFlags{full: true}).workloads()
	if err != nil || len(full) != len(DefaultWorkloads()) {
		t.Errorf("-full chose %d workloads (%v), want the %d defaults", len(full), err, len(DefaultWorkloads()))
	}
	if _, err := (&benchFlags{images: "nosuch"}).workloads(); err == nil {
		t.Error("-images nosuch was accepted")
	}
}

// TestSharedMode: the shared mode runs the plain conversion on lazysnap,
// which a run asks for by name.
func TestSharedMode(t *testing.T) {
	got, err := ParseModes("lazysnap-shared")
	if err != nil || len(got) != 1 || got[0] != Shared {
		t.Fatalf("ParseModes(lazysnap-shared) = %v, %v", got, err)
	}
	if !Shared.usesLazysnap() || !Shared.lazy() || Shared.conversion() != Lazy.conversion() {
		t.Errorf("shared: usesLazysnap %v, lazy %v, conversion %q (want lazysnap's plain %q)",
			Shared.usesLazysnap(), Shared.lazy(), Shared.conversion(), Lazy.conversion())
	}
}

// TestTracedModes: each traced mode records its trace on the plain image of
// its own format and converts with it prioritized, in that format.
func TestTracedModes(t *testing.T) {
	c := &converter{}
	for _, tc := range []struct {
		m, plain Mode
		format   bool // whether lazyconv is asked for zstd:chunked
	}{{Traced, Lazy, false}, {TracedZstd, ZstdChunked, true}} {
		if !tc.m.traced() || tc.m.plainOf() != tc.plain || tc.plain.traced() || !tc.m.usesLazysnap() {
			t.Errorf("%s: traced %v, plain %s (want %s), usesLazysnap %v", tc.m, tc.m.traced(), tc.m.plainOf(), tc.plain, tc.m.usesLazysnap())
		}
		args, err := c.args(Workload{}, "src", tc.m, "dst", "trace.txt")
		if err != nil {
			t.Fatalf("%s: %v", tc.m, err)
		}
		got := strings.Join(args, " ")
		if !strings.Contains(got, "--prioritize trace.txt") || strings.Contains(got, "--format zstd:chunked") != tc.format {
			t.Errorf("%s converts with %q", tc.m, got)
		}
	}
	if got, err := ParseModes("lazysnap-traced-zstdchunked"); err != nil || got[0] != TracedZstd {
		t.Errorf("ParseModes = %v, %v", got, err)
	}
}
