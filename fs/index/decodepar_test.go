package index

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/fs/index/indextest"
)

// withMinParallelBytes lets tests cut small TOCs into many pieces.
func withMinParallelBytes(n int) Option { return func(o *options) { o.minParallelBytes = n } }

// splitPoints are TOCs whose strings hold what the cutting looks for, or
// what would confuse a scanner that did not track strings: "},{" in names,
// link targets and xattrs, escaped quotes and backslashes before them,
// brackets, escaped and literal unicode, and entries spread over lines.
var splitPoints = []string{
	`{"version":1,"entries":[{"name":"a},{b","type":"dir"},{"name":"a},{b/c\"},{\"d","type":"reg"},{"name":"x","type":"symlink","linkName":"},{},{"}]}`,
	`{"entries":[{"name":"q\\","type":"dir"},{"name":"q\\\"},{","type":"reg"},{"name":"[{]}","type":"dir"},{"name":"\u007d,\u007b","type":"dir"}]}`,
	`{"entries":[{"name":"ünï/cødé/日本語},{","type":"dir"},{"name":"ünï/\ud83d\ude00","type":"reg","xattrs":{"user.a},{":"fSx7","user.b":"W3t9XQ=="}},{"name":"e","type":"dir","xattrs":{}}]}`,
	"{\"entries\":[\n  {\"name\":\"a\",\"type\":\"dir\"},\n  {\"name\":\"a/b\",\"type\":\"reg\"}\t,\r\n{\"name\":\"c\",\"type\":\"dir\"}\n]\n}\n",
	`{"x":{"entries":[{"name":"no"}]},"Entries":[{"name":"a","type":"dir"},{"NAME":"b","Type":"dir","MODE":493}],"VERSION":3,"y":[1,2,{"z":"},{"}]}`,
	`{"entries":[]}`, `{"entries":null}`, `{"version":2}`, `{"entries":[{}]}`, `{"entries":[{},{},{}]}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","type":"dir"}],"entries":[]}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","type":"dir"}]} {}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","type":"dir"}],}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","type":"dir"},]}`,
	`{"entries":[{"name":"a","type":"dir"},,{"name":"b","type":"dir"}]}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","type":"dir"}}`,
	`{"entries":[{"name":"a","type":"dir"},null,{"name":"b","type":"dir"}]}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":1,"type":"dir"}]}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","size":1e3}]}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","xattrs":{"user.a":"not base64!"}}]}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","type":"dir"}],"version":"one"}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","type":"dir"}],"version":1,"version":2}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"` + strings.Repeat("b", 4097) + `","type":"dir"}]}`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","type":"dir"}]`,
	`{"entries":[{"name":"a","type":"dir"},{"name":"b","type":"dir"}]}]`,
}

// sameAsDecode checks that DecodeBytes, on every number of workers and
// with pieces down to a few bytes, gives what Decode gives: the same TOC,
// or the same error.
func sameAsDecode(t *testing.T, doc []byte, opts ...Option) {
	t.Helper()
	want, wantErr := Decode(context.Background(), bytes.NewReader(doc), opts...)
	for _, workers := range []int{1, 2, 3, 8} {
		for _, from := range []int{1, 64, 4096} {
			got, err := DecodeBytes(context.Background(), doc, append(opts, WithDecodeWorkers(workers), withMinParallelBytes(from))...)
			if fmt.Sprint(err) != fmt.Sprint(wantErr) {
				t.Fatalf("%d workers, pieces from %d bytes: error %v, Decode's %v", workers, from, err, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%d workers, pieces from %d bytes: the TOC differs from Decode's", workers, from)
			}
		}
	}
}

func TestDecodeBytesSplitPoints(t *testing.T) {
	for i, doc := range splitPoints {
		t.Run(fmt.Sprint(i), func(t *testing.T) { sameAsDecode(t, []byte(doc)) })
	}
}

func TestDecodeBytesRefusesAsDecode(t *testing.T) {
	docs := []string{`[]`, `{"entries":{}}`, `{"entries":[]} x`, `{"entries":[1]}`, `{"version":"one"}`,
		`{"entries":[`, `{"x":[}`, `{"entries":[{"name":"a"},{"name":"b"}`, ``, ` `, `{`, `{"entries"`}
	for _, s := range refused {
		docs = append(docs, s)
	}
	for _, doc := range docs {
		sameAsDecode(t, []byte(doc))
	}
	many := []byte(`{"entries":[{}` + strings.Repeat(`,{}`, 5000) + `]}`)
	sameAsDecode(t, many, WithMaxEntries(1000))
	sameAsDecode(t, many, WithMaxEntries(5001))
	sameAsDecode(t, many, WithMaxEntries(5000))
}

// TestDecodeBytesRealTOCs: TOCs shaped like real layers', compact as
// estargz writes them and indented, decode as Decode decodes them, and
// the compact ones on the parallel path (not by falling back to Decode).
func TestDecodeBytesRealTOCs(t *testing.T) {
	for seed := range uint64(4) {
		toc := indextest.RealTOC(500+int(seed)*1500, seed)
		compact, err := json.Marshal(toc)
		if err != nil {
			t.Fatal(err)
		}
		indented, err := json.MarshalIndent(toc, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		sameAsDecode(t, compact)
		sameAsDecode(t, indented)
		want, err := Decode(context.Background(), bytes.NewReader(compact))
		if err != nil {
			t.Fatal(err)
		}
		for _, workers := range []int{2, 3} {
			o := buildOptions([]Option{withMinParallelBytes(1024)})
			got, ok := decodeParallel(context.Background(), compact, o, workers)
			if !ok || !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d, %d workers: parallel decoding failed (%v) or differs", seed, workers, ok)
			}
		}
		x1, err := Build(context.Background(), want, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := DecodeBytes(context.Background(), compact, WithDecodeWorkers(3), withMinParallelBytes(1))
		x2, err := Build(context.Background(), got, 1<<40)
		if err != nil || !reflect.DeepEqual(x1, x2) {
			t.Fatalf("seed %d: the index of the parallel decoding differs (%v)", seed, err)
		}
	}
}

// TestDecodeBytesCancelled: a cancelled decode stops with the context's
// error, as Decode does.
func TestDecodeBytesCancelled(t *testing.T) {
	doc, err := json.Marshal(indextest.RealTOC(5000, 1))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, want := Decode(ctx, bytes.NewReader(doc))
	_, got := DecodeBytes(ctx, doc, WithDecodeWorkers(2))
	if want == nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("DecodeBytes: %v, want Decode's %v", got, want)
	}
}

// FuzzDecodeBytes: on any input, DecodeBytes cut into small pieces gives
// exactly what Decode gives.
func FuzzDecodeBytes(f *testing.F) {
	addSeedTOCs(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		opts := []Option{WithMaxEntries(50)}
		want, wantErr := Decode(context.Background(), bytes.NewReader(doc), opts...)
		got, err := DecodeBytes(context.Background(), doc, append(opts, WithDecodeWorkers(3), withMinParallelBytes(1))...)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("DecodeBytes: %+v, %v; Decode: %+v, %v", got, err, want, wantErr)
		}
	})
}

// BenchmarkDecodeBytes measures decoding a TOC held in memory, by size, to
// find where decoding on more than one core starts to pay.
func BenchmarkDecodeBytes(b *testing.B) {
	for _, n := range []int{100, 300, 1000, 3000, benchTOCEntries} {
		doc, err := json.Marshal(indextest.RealTOC(n, 1))
		if err != nil {
			b.Fatal(err)
		}
		for _, mode := range []struct {
			name string
			opts []Option
		}{{"sequential", []Option{WithDecodeWorkers(1)}}, {"parallel", []Option{withMinParallelBytes(1)}}} {
			b.Run(fmt.Sprintf("%dKiB/%s", len(doc)>>10, mode.name), func(b *testing.B) {
				b.SetBytes(int64(len(doc)))
				for b.Loop() {
					if _, err := DecodeBytes(context.Background(), doc, mode.opts...); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// addSeedTOCs seeds f with the hostile TOCs and the documents cut at
// awkward places that the package's tests use.
func addSeedTOCs(f *testing.F) {
	for _, s := range refused {
		f.Add([]byte(s))
	}
	for _, s := range splitPoints {
		f.Add([]byte(s))
	}
}
