package cache

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestJournalRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.ranges")
	if err := writeJournal(path, &intervals{}); err != nil {
		t.Fatal(err)
	}
	j, err := openJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []span{{0, 10}, {5, 20}, {50, 60}} {
		if err := j.append(s); err != nil {
			t.Fatal(err)
		}
	}
	j.close()
	iv, compact, err := loadJournal(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	if want := []span{{0, 20}, {50, 60}}; !slices.Equal(iv.spans, want) {
		t.Errorf("spans = %v, want %v", iv.spans, want)
	}
	if !compact {
		t.Error("3 records for 2 spans should ask for compaction")
	}
}

func TestJournalRejectsBadRecords(t *testing.T) {
	good := make([]byte, recordSize)
	encodeRecord(good, span{0, 10})
	corrupt := make([]byte, recordSize)
	encodeRecord(corrupt, span{10, 20})
	corrupt[3] ^= 0xff
	outside := make([]byte, recordSize)
	encodeRecord(outside, span{90, 110}) // past a 100-byte file
	later := make([]byte, recordSize)
	encodeRecord(later, span{40, 50})

	tests := []struct {
		name string
		body []byte
		want []span
	}{
		{"torn tail", slices.Concat(good, later[:7]), []span{{0, 10}}},
		{"corrupt stops load", slices.Concat(good, corrupt, later), []span{{0, 10}}},
		{"outside file", slices.Concat(good, outside, later), []span{{0, 10}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j.ranges")
			if err := os.WriteFile(path, slices.Concat([]byte(journalMagic), tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			iv, compact, err := loadJournal(path, 100)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(iv.spans, tt.want) {
				t.Errorf("spans = %v, want %v", iv.spans, tt.want)
			}
			if !compact {
				t.Error("a damaged journal should ask for compaction")
			}
		})
	}
}

func TestJournalBadMagic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.ranges")
	rec := make([]byte, recordSize)
	encodeRecord(rec, span{0, 10})
	if err := os.WriteFile(path, slices.Concat([]byte("NOTMAGIC"), rec), 0o600); err != nil {
		t.Fatal(err)
	}
	iv, _, err := loadJournal(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	if iv.bytes != 0 {
		t.Errorf("journal with unknown magic loaded %d bytes, want 0", iv.bytes)
	}
}
