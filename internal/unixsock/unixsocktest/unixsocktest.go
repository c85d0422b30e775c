// Package unixsocktest probes a unix socket as another user, for tests of
// who may connect to lazysnap's sockets. A probe is the test binary itself,
// run again as that user: a package using Probe calls Main from its
// TestMain.
package unixsocktest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is what a probe does once connected.
type Kind string

const (
	// HTTP sends GET /healthz and reports "http STATUS".
	HTTP Kind = "http"
	// Read reads and reports "data" when the server sends something (a gRPC
	// server sends its settings first) or "eof" when it hangs up.
	Read Kind = "read"
)

// Nobody is the uid (and gid) of the unprivileged user probes run as.
const Nobody uint32 = 65534

const (
	envSocket = "LAZYSNAP_UNIXSOCKTEST_SOCKET"
	envKind   = "LAZYSNAP_UNIXSOCKTEST_KIND"
)

// Main runs the probe when the process is one, and the tests otherwise.
func Main(m *testing.M) {
	if sock := os.Getenv(envSocket); sock != "" {
		fmt.Print(probe(sock, Kind(os.Getenv(envKind))))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// probe connects to sock and reports what happened in one word or two:
// a failed connect as its errno ("dial EACCES").
func probe(sock string, kind Kind) string {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return "dial " + errnoName(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if kind == HTTP {
		return probeHTTP(c)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return "eof"
		}
		return "read " + errnoName(err)
	}
	return "data"
}

func probeHTTP(c net.Conn) string {
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"); err != nil {
		return "write " + errnoName(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "read " + errnoName(err)
	}
	resp.Body.Close()
	return fmt.Sprintf("http %d", resp.StatusCode)
}

func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	if errors.Is(err, io.EOF) {
		return "eof"
	}
	return err.Error()
}

// Prober runs probes from a copy of the test binary.
type Prober struct {
	t   testing.TB
	bin string
}

// NewProber copies the test binary where any user can run it: the go
// command builds it in a directory only its owner can enter.
func NewProber(t testing.TB) *Prober {
	t.Helper()
	return &Prober{t: t, bin: probeBinary(t)}
}

// Probe connects to socket as uid (with gid uid and no supplementary
// groups) from a child process and returns its report, such as "dial
// EACCES", "http 403", "eof" or "data".
func (p *Prober) Probe(uid uint32, socket string, kind Kind) string {
	t := p.t
	t.Helper()
	cmd := exec.Command(p.bin)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), envSocket+"="+socket, envKind+"="+string(kind))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe of %s as uid %d: %v: %s", socket, uid, err, out)
	}
	return strings.TrimSpace(string(out))
}

func probeBinary(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	OpenPath(t, dir)
	dst := filepath.Join(dir, "probe")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return dst
}

// OpenPath makes dir and the directories above it, up to the temp dir,
// searchable by everyone (test dirs are 0700), so that a probe's result
// depends only on the modes lazysnap sets below. It skips the test when a
// directory from the temp dir up is not searchable: it changes no mode
// outside the test's own directories.
func OpenPath(t testing.TB, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		inTmp := strings.HasPrefix(d, tmp+string(filepath.Separator))
		if fi.Mode().Perm()&0o001 == 0 {
			if !inTmp {
				t.Skipf("%s is not searchable by other users", d)
			}
			if err := os.Chmod(d, fi.Mode().Perm()|0o755); err != nil {
				t.Fatal(err)
			}
		}
		if d == filepath.Dir(d) {
			return
		}
	}
}
