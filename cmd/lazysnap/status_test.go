package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	lazyfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/layer"
)

func statusFixture() []lazyfs.LayerStatus {
	l := func(img, d, state, diffID string, present, total int64) lazyfs.LayerStatus {
		return lazyfs.LayerStatus{ImageRef: img, State: state, DiffID: diffID, Mountpoint: "/m/" + d,
			Stats: layer.Stats{Digest: digest.FromString(d), BytesPresent: present, BytesTotal: total,
				BackgroundDone: state == lazyfs.StateComplete}}
	}
	return []lazyfs.LayerStatus{
		l("reg/a:1", "a1", lazyfs.StateComplete, lazyfs.DiffIDVerified, 100, 100),
		l("reg/a:1", "a2", lazyfs.StateFetching, lazyfs.DiffIDPending, 100, 300),
		l("reg/b:1", "b1", lazyfs.StateComplete, lazyfs.DiffIDVerified, 50, 50),
	}
}

// TestStatusByImage sums layers per image: bytes-weighted fetched share,
// the least advanced state, diff_id states and background progress.
func TestStatusByImage(t *testing.T) {
	var out bytes.Buffer
	if err := writeStatus(&out, outputImages, statusFixture()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := [][]string{
		{"IMAGE", "LAYERS", "FETCHED", "STATE", "DIFF_ID", "BACKGROUND"},
		{"reg/a:1", "2", "50.0%", "fetching", "1", "verified,", "1", "pending", "1/2", "complete"},
		{"reg/b:1", "1", "100.0%", "complete", "1", "verified", "1/1", "complete"},
	}
	if len(lines) != len(want) {
		t.Fatalf("status:\n%s", out.String())
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d = %q, want %q", i, got, w)
		}
	}
}

// TestStatusJSON decodes the JSON output back into images with their layers.
func TestStatusJSON(t *testing.T) {
	var out bytes.Buffer
	if err := writeStatus(&out, outputJSON, statusFixture()); err != nil {
		t.Fatal(err)
	}
	var images []imageStatus
	if err := json.Unmarshal(out.Bytes(), &images); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(images) != 2 || images[0].Layers != 2 || len(images[0].LayerStatus) != 2 ||
		images[0].DiffIDs[lazyfs.DiffIDVerified] != 1 || images[1].State != lazyfs.StateComplete {
		t.Fatalf("decoded %+v", images)
	}
	if err := writeStatus(&out, "yaml", nil); err == nil {
		t.Error("unknown output format accepted")
	}
}
