package index

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/lazysnap/lazysnap/fs/index/indextest"
)

// entryShapes are entries parseEntry must take, each as json decodes it.
var entryShapes = []string{
	`{}`,
	`{"name":"a","type":"dir"}`,
	`{"name":"usr/lib/libc.so.6","type":"reg","size":1922136,"modtime":"2023-01-01T00:00:00Z","mode":420,"uid":0,"gid":0,"userName":"root","groupName":"root","offset":512,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","chunkSize":1922136,"chunkDigest":"sha256:1111111111111111111111111111111111111111111111111111111111111111"}`,
	`{"name":"big","type":"chunk","offset":9007199254740993,"innerOffset":4194304,"chunkOffset":8388608,"chunkSize":4194304}`,
	`{"name":"l","type":"symlink","linkName":"../x","uid":-1,"gid":-0,"devMajor":8,"devMinor":1}`,
	`{"name":"ünï/cødé/日本語","type":"reg","userName":"✓"}`,
	`{"name":"d","type":"dir","xattrs":{}}`,
	`{"name":"f","type":"reg","xattrs":{"user.a":"","security.capability":"AQAAAgAgAAAAAAAAAAAAAAAAAAA=","user.b":"W3t9XQ==","user.b":"YQ=="}}`,
	"{ \"name\" : \"a\" ,\n\t\"type\":\"reg\" , \"size\" : 0\r}",
	`{"name":"del` + "\x7f" + `","mode":9223372036854775807,"size":-9223372036854775808}`,
}

// entryDeclines are entries parseEntry leaves to json, each for a reason
// json decides in its own way (or refuses).
var entryDeclines = []string{
	`{"NAME":"a"}`,                  // json matches keys ignoring case
	`{"Name":"a"}`,                  //
	`{"name":"a","name":"b"}`,       // json keeps the last
	`{"xattrs":{},"xattrs":{}}`,     // json merges
	`{"numLink":3}`,                 // json ignores unknown keys
	`{"name":null}`,                 // json leaves the field
	`{"name":"a\"b"}`,               // escapes
	`{"name":"a\u0041"}`,            //
	`{"name":"a` + "\xff" + `"}`,    // json replaces invalid UTF-8
	`{"name":"a` + "\x01" + `"}`,    // json refuses control characters
	`{"size":1.0}`,                  // json refuses fractions for an int
	`{"size":1e3}`,                  //
	`{"size":01}`,                   // not JSON
	`{"size":-}`,                    //
	`{"size":99999999999999999999}`, // out of range
	`{"size":"1"}`,                  // a string for a number
	`{"name":1}`,                    // a number for a string
	`{"name":true}`,                 //
	`{"xattrs":{"user.a":"not base64!"}}`,
	`{"xattrs":{"user.a":null}}`,
	`{"xattrs":[]}`,
	`{"name":"a",}`,
	`{"name":"a"`,
	`{"name":"a" "type":"dir"}`,
	`null`,
	`[]`,
	``,
}

// sameAsJSON checks that what parseEntry takes of doc, json decodes to the
// same entry, ending at the same offset.
func sameAsJSON(t *testing.T, doc []byte) (taken bool) {
	t.Helper()
	got, end, ok := parseEntry(doc, 0)
	if !ok {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	var want *estargz.TOCEntry
	if err := dec.Decode(&want); err != nil {
		t.Fatalf("parseEntry took %q, which json refuses: %v", doc, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseEntry(%q) = %+v, json gives %+v", doc, got, want)
	}
	if int(dec.InputOffset()) != end {
		t.Fatalf("parseEntry(%q) ends at %d, json at %d", doc, end, dec.InputOffset())
	}
	return true
}

func TestParseEntryAgreesWithJSON(t *testing.T) {
	for _, doc := range entryShapes {
		if !sameAsJSON(t, []byte(doc+`,{"name":"next"}`)) {
			t.Errorf("parseEntry declined %q", doc)
		}
	}
	// Every entry of a TOC shaped like a real layer's, as estargz writes it.
	for _, e := range indextest.RealTOC(3000, 7).Entries {
		doc, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if !sameAsJSON(t, doc) {
			t.Fatalf("parseEntry declined %s", doc)
		}
	}
}

func TestParseEntryDeclines(t *testing.T) {
	for _, doc := range entryDeclines {
		if _, _, ok := parseEntry([]byte(doc), 0); ok {
			t.Errorf("parseEntry took %q", doc)
		}
	}
}

// TestDecodeEntryFallsBackToJSON: an entry parseEntry declines is decoded
// by json, and one json refuses is refused.
func TestDecodeEntryFallsBackToJSON(t *testing.T) {
	e, end, ok := decodeEntry([]byte(`{"NAME":"a","numLink":3} ,{}`), 0)
	if !ok || e.Name != "a" || end != len(`{"NAME":"a","numLink":3}`) {
		t.Errorf("decodeEntry: %+v, %d, %v", e, end, ok)
	}
	if _, _, ok := decodeEntry([]byte(`{"size":1.5}`), 0); ok {
		t.Error("decodeEntry took a fraction for an integer")
	}
}

// FuzzParseEntry: whatever parseEntry takes, json decodes the same way.
func FuzzParseEntry(f *testing.F) {
	for _, s := range append(entryShapes, entryDeclines...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) { sameAsJSON(t, doc) })
}
