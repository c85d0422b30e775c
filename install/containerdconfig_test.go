package install

import (
	"os"
	"reflect"
	"testing"

	"github.com/containerd/errdefs"
)

// fixtures are real containerd configs: version 2 as containerd 1.7 writes
// it, version 3 as containerd 2.0-2.2 write it, and version 4 as the pinned
// containerd 2.4.2 writes it (`containerd config default`).
var fixtures = []struct {
	name    string
	file    string
	version int64
}{
	{"v2-containerd-1.7", "testdata/containerd-1.7-v2.toml", 2},
	{"v3-containerd-2.0", "testdata/containerd-2.0-v3.toml", 3},
	{"v4-containerd-2.4", "testdata/containerd-2.4-default-v4.toml", 4},
}

func testProxySettings() proxySettings {
	return proxySettings{socket: "/run/lazysnap/lazysnap.sock", rootDir: "/var/lib/lazysnap", platform: "linux/amd64"}
}

func readFixture(t *testing.T, file string) *containerdConfig {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseContainerdConfig(raw)
	if err != nil {
		t.Fatalf("parsing %s: %v", file, err)
	}
	return cfg
}

// withoutLazysnap drops lazysnap's keys, and tables left empty, so two
// trees can be compared on everything else.
func withoutLazysnap(tree map[string]any, version int64) map[string]any {
	out := deepCopy(tree)
	for _, s := range lazysnapSettings(version, testProxySettings()) {
		deletePath(out, s.path, nil)
	}
	return out
}

func TestMergeSetsLazysnapAndKeepsEverythingElse(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			cfg := readFixture(t, f.file)
			if cfg.version != f.version {
				t.Fatalf("version = %d, want %d", cfg.version, f.version)
			}
			merged, changed := cfg.merged(testProxySettings())
			if !changed {
				t.Fatal("merge into a default config reported no change")
			}
			data, err := encodeContainerdConfig(merged)
			if err != nil {
				t.Fatal(err)
			}
			// Compare what a reader of the written file gets, not the
			// in-memory tree.
			written, err := parseContainerdConfig(data)
			if err != nil {
				t.Fatalf("merged config does not parse: %v\n%s", err, data)
			}
			for _, s := range lazysnapSettings(f.version, testProxySettings()) {
				got, ok := getPath(written.tree, s.path)
				if want := s.valueIn(cfg.tree); !ok || !reflect.DeepEqual(got, want) {
					t.Errorf("%v = %#v, want %#v", s.path, got, want)
				}
			}
			if !reflect.DeepEqual(withoutLazysnap(written.tree, f.version), withoutLazysnap(cfg.tree, f.version)) {
				t.Error("merge changed settings other than lazysnap's")
			}
			if _, again := written.merged(testProxySettings()); again {
				t.Error("merging into a merged config reported a change")
			}
		})
	}
}

func TestUnmergeRevertsToOriginalValues(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			orig := readFixture(t, f.file)
			merged, _ := orig.merged(testProxySettings())
			cur := &containerdConfig{tree: merged, version: orig.version}
			reverted, changed := cur.unmerged(testProxySettings(), orig.tree)
			if !changed {
				t.Fatal("unmerge reported no change")
			}
			if !reflect.DeepEqual(reverted, orig.tree) {
				t.Error("unmerge with the original did not give the original back")
			}
			// Without a backup the keys go, and so do tables only they filled.
			bare, _ := cur.unmerged(testProxySettings(), nil)
			if (&containerdConfig{tree: bare, version: orig.version}).hasLazysnap() {
				t.Error("unmerge without a backup left lazysnap configured")
			}
		})
	}
}

func TestParseRefusesWhatItCannotMerge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		raw   string
		isErr func(error) bool
	}{
		{"garbage", "version = 2\n[plugins\n", errdefs.IsInvalidArgument},
		{"duplicate key", "version = 2\nversion = 3\n", errdefs.IsInvalidArgument},
		{"version 1", "root = '/var/lib/containerd'\n", errdefs.IsFailedPrecondition},
		{"future version", "version = 5\n", errdefs.IsFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseContainerdConfig([]byte(tc.raw))
			if err == nil || !tc.isErr(err) {
				t.Fatalf("err = %v, want the right errdefs category", err)
			}
		})
	}
}
