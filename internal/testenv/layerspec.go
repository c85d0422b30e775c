package testenv

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
)

// Content says what a generated file holds.
type Content int

const (
	// Random content is incompressible (a seeded ChaCha8 stream).
	Random Content = iota
	// Compressible content is repetitive text that gzip shrinks well.
	Compressible
)

// FileSpec describes one generated regular file. Its content is a pure
// function of Path, Size, Content and Seed, so it can be regenerated.
type FileSpec struct {
	// Path is absolute inside the image ("/data/a/file1").
	Path    string
	Size    int64
	Content Content
	// Seed varies the content of files that share a path across images.
	Seed uint64
}

// LayerSpec describes one generated layer.
type LayerSpec struct {
	// Busybox adds /bin/busybox (busybox-static from the host) with
	// symlinks for the applets tests use (sh, cat, find, sha256sum...).
	Busybox bool
	Files   []FileSpec
}

// BusyboxLayer is a layer holding only busybox and its applet links.
func BusyboxLayer() LayerSpec { return LayerSpec{Busybox: true} }

// GeneratedFiles returns n files named dir/fileNNN of size bytes each.
func GeneratedFiles(dir string, n int, size int64, content Content) []FileSpec {
	files := make([]FileSpec, n)
	for i := range files {
		files[i] = FileSpec{Path: path.Join(dir, fmt.Sprintf("file%03d", i)), Size: size, Content: content}
	}
	return files
}

// busyboxApplets are linked to /bin/busybox in a Busybox layer.
func busyboxApplets() []string {
	return []string{"sh", "cat", "sha256sum", "md5sum", "find", "sort", "xargs", "ls", "sleep", "echo",
		"head", "tail", "dd", "wc", "true", "false", "date", "cp", "mkdir", "stat", "grep", "awk", "cut",
		"test", "[", "env", "id", "printf", "seq", "tr", "uniq", "usleep"}
}

// open returns the content of f as a stream.
func (f FileSpec) open() io.Reader {
	if f.Content == Compressible {
		return io.LimitReader(&textStream{name: f.Path}, f.Size)
	}
	seed := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d", f.Path, f.Seed)))
	return io.LimitReader(&randomStream{rng: rand.NewChaCha8(seed)}, f.Size)
}

// randomStream adapts ChaCha8 to io.Reader.
type randomStream struct{ rng *rand.ChaCha8 }

func (r *randomStream) Read(p []byte) (int, error) {
	n := len(p) &^ 7
	if n == 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], r.rng.Uint64())
		return copy(p, b[:]), nil
	}
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], r.rng.Uint64())
	}
	return n, nil
}

// textStream repeats numbered lines naming the file.
type textStream struct {
	name string
	line int
	buf  []byte
}

func (s *textStream) Read(p []byte) (int, error) {
	if len(s.buf) == 0 {
		s.buf = fmt.Appendf(nil, "line %08d of %s: the quick brown fox jumps over the lazy dog\n", s.line, s.name)
		s.line++
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}
