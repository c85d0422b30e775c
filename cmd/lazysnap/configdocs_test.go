package main

import (
	"bufio"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDocumentedDefaults: the settings tables of the README and of
// docs/config.md show every field of the config, each with the default
// defaultConfig() really has, and nothing else.
func TestDocumentedDefaults(t *testing.T) {
	want := flattenConfig(reflect.ValueOf(defaultConfig()), "")
	for _, doc := range []string{"../../README.md", "../../docs/config.md"} {
		t.Run(doc, func(t *testing.T) {
			got := settingsTable(t, doc)
			for key, def := range want {
				switch d, ok := got[key]; {
				case !ok:
					t.Errorf("%s is not documented", key)
				case d != def:
					t.Errorf("%s: documented default %q, defaultConfig() has %q", key, d, def)
				}
			}
			for key := range got {
				if _, ok := want[key]; !ok {
					t.Errorf("%s is documented but is no setting", key)
				}
			}
		})
	}
}

// flattenConfig returns each leaf field of v by its dotted TOML key, with
// its value written the way the documentation writes it.
func flattenConfig(v reflect.Value, prefix string) map[string]string {
	out := map[string]string{}
	for i := range v.NumField() {
		key := prefix + v.Type().Field(i).Tag.Get("toml")
		f := v.Field(i)
		switch {
		case f.Type() == reflect.TypeFor[duration]():
			out[key] = time.Duration(f.Int()).String()
		case f.Kind() == reflect.Struct:
			for k, s := range flattenConfig(f, key+".") {
				out[k] = s
			}
		default:
			out[key] = fmt.Sprint(f.Interface())
		}
	}
	return out
}

// settingsTable reads the "setting | default | meaning" table of a
// Markdown file into normalised defaults by key. A row may list several
// keys and defaults separated by commas.
func settingsTable(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.ToLower(line), "| setting | default |") {
			in = true
			continue
		}
		if !in || strings.HasPrefix(line, "|--") || strings.HasPrefix(line, "| ---") {
			continue
		}
		cells := strings.Split(line, " | ")
		if !strings.HasPrefix(line, "|") || len(cells) < 3 {
			break // the table ended
		}
		keys := strings.Split(strings.TrimPrefix(cells[0], "| "), ", ")
		defs := strings.Split(cells[1], ", ")
		if len(keys) != len(defs) {
			t.Fatalf("%s: %d keys but %d defaults in %q", path, len(keys), len(defs), line)
		}
		for i, k := range keys {
			out[strings.Trim(k, "`")] = normaliseDefault(t, defs[i])
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no settings table", path)
	}
	return out
}

var sizeRE = regexp.MustCompile(`^(\d+) (KiB|MiB|GiB)$`)

// normaliseDefault turns a documented default ("`true`", `"/x"`, "96 MiB",
// "`0` (unlimited)", "off") into the form flattenConfig writes. A size in
// parentheses after a number must agree with it.
func normaliseDefault(t *testing.T, cell string) string {
	t.Helper()
	main, note, _ := strings.Cut(strings.TrimSpace(cell), " (")
	v := normaliseValue(main)
	if note = strings.TrimSuffix(note, ")"); sizeRE.MatchString(note) && normaliseValue(note) != v {
		t.Errorf("default %q: %s is not %s", cell, main, note)
	}
	return v
}

func normaliseValue(s string) string {
	s = strings.Trim(strings.Trim(s, "`"), `"`)
	if s == "off" {
		return ""
	}
	if m := sizeRE.FindStringSubmatch(s); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		shift := map[string]uint{"KiB": 10, "MiB": 20, "GiB": 30}[m[2]]
		return strconv.FormatInt(n<<shift, 10)
	}
	return s
}
