package install

import (
	"reflect"
	"strings"
	"testing"
)

// TestMergeUnpackConfig checks the transfer service's unpack list in every
// fixture: lazysnap's entry is added, the default overlayfs entry is kept
// (containerd 1.7 writes it) or written (2.x leaves the list out, and a list
// replaces containerd's built-in default), and a second merge changes nothing.
func TestMergeUnpackConfig(t *testing.T) {
	overlay := unpackEntry("linux/amd64", "overlayfs", "walking")
	ours := unpackEntry("linux/amd64", "lazysnap", "walking")
	want := map[string][]any{
		"v2-containerd-1.7": {map[string]any{"differ": "", "platform": "linux/amd64", "snapshotter": "overlayfs"}, ours},
		"v3-containerd-2.0": {overlay, ours},
		"v4-containerd-2.4": {overlay, ours},
	}
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			merged, _ := readFixture(t, f.file).merged(testProxySettings())
			data, err := encodeContainerdConfig(merged)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), "[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]") &&
				!strings.Contains(string(data), `[[plugins."io.containerd.transfer.v1.local".unpack_config]]`) {
				t.Errorf("merged config has no unpack_config array of tables:\n%s", data)
			}
			written, err := parseContainerdConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := getPath(written.tree, transferUnpackPath())
			if !reflect.DeepEqual(got, want[f.name]) {
				t.Errorf("unpack_config = %#v\nwant %#v", got, want[f.name])
			}
		})
	}
}

// TestMergeUnpackConfigKeepsOperatorList leaves a list that already names
// lazysnap alone, and appends to one that does not.
func TestMergeUnpackConfigKeepsOperatorList(t *testing.T) {
	p := testProxySettings()
	custom := []any{unpackEntry("linux/amd64", "lazysnap", "walking")}
	custom[0].(map[string]any)["layer_types"] = []any{"application/vnd.oci.image.layer.v1.tar+gzip"}
	if got := p.mergeUnpackConfig(custom, true); !reflect.DeepEqual(got, custom) {
		t.Errorf("a list naming lazysnap was changed: %#v", got)
	}
	native := []any{unpackEntry("linux/amd64", "native", "walking")}
	got := p.mergeUnpackConfig(native, true)
	want := []any{unpackEntry("linux/amd64", "native", "walking"), unpackEntry("linux/amd64", "lazysnap", "walking")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
	if len(native) != 1 {
		t.Error("merge modified the config's own list")
	}
}
