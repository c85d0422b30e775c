package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// suidProbeC prints the effective uid, and whether argv[1], a device node,
// opens and takes a write.
const suidProbeC = `#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
	printf("euid=%d", (int)geteuid());
	if (argc > 1) {
		int fd = open(argv[1], O_WRONLY);
		if (fd < 0)
			printf(" dev=%s", strerrorname_np(errno));
		else
			printf(" dev=%s", write(fd, "x", 1) == 1 ? "ok" : "write-failed");
	}
	printf("\n");
	return 0;
}
`

// SuidProbe returns a static program (it runs in any root file system)
// that prints its effective uid and whether the device node named by its
// argument opens for writing: the tests of set-user-ID programs and
// devices in containers install it set-user-ID root. script/install-deps.sh
// installs gcc and the static libc it needs.
func SuidProbe(t testing.TB) []byte {
	t.Helper()
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "probe.c"), filepath.Join(dir, "probe")
	if err := os.WriteFile(src, []byte(suidProbeC), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-static", "-Os", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc -static: %v: %s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
