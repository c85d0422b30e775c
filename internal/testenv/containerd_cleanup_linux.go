package testenv

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// shimSocketDir is fixed by containerd; shim sockets are named by a hash of
// the daemon address, namespace and container id, so tests do not collide.
const shimSocketDir = "/run/containerd/s"

// stopContainers kills and deletes every task and container while the
// daemon still runs: shims outlive the daemon, so they must go first.
func (c *Containerd) stopContainers() {
	if c.Client == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nss, err := c.Client.NamespaceService().List(ctx)
	if err != nil {
		c.t.Logf("containerd cleanup: listing namespaces: %v", err)
		return
	}
	for _, ns := range nss {
		c.stopNamespace(namespaces.WithNamespace(ctx, ns))
	}
}

func (c *Containerd) stopNamespace(ctx context.Context) {
	containers, err := c.Client.Containers(ctx)
	if err != nil {
		return
	}
	for _, ctr := range containers {
		if task, err := ctr.Task(ctx, nil); err == nil {
			_ = task.Kill(ctx, syscall.SIGKILL)
			if ch, err := task.Wait(ctx); err == nil {
				<-ch
			}
			_, _ = task.Delete(ctx)
		}
		_ = ctr.Delete(ctx)
	}
}

// cleanupAfterExit runs once the daemon is dead: it kills shims left behind
// (a test may have killed the daemon), removes their sockets, unmounts what
// is left under the daemon's directories and removes the run dir.
func (c *Containerd) cleanupAfterExit() {
	c.killShims()
	if err := UnmountUnder(c.Root, c.State, c.runDir); err != nil {
		c.t.Logf("containerd cleanup: %v", err)
	}
	if err := os.RemoveAll(c.runDir); err != nil {
		c.t.Logf("containerd cleanup: %v", err)
	}
}

// killShims kills shim processes whose command line names this daemon's
// address, and removes their sockets.
func (c *Containerd) killShims() {
	for _, p := range processesWithArg(c.Address) {
		ns, id := argAfter(p.args, "-namespace"), argAfter(p.args, "-id")
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		if ns != "" && id != "" {
			sum := sha256.Sum256([]byte(filepath.Join(c.Address, ns, id)))
			_ = os.Remove(filepath.Join(shimSocketDir, fmt.Sprintf("%x", sum)))
		}
	}
}

type process struct {
	pid  int
	args []string
}

// processesWithArg lists the processes having arg among their arguments.
func processesWithArg(arg string) []process {
	return listProcesses(func(a string) bool { return a == arg })
}

// processesMentioning lists the processes with an argument containing one of
// substrings.
func processesMentioning(substrings ...string) []process {
	return listProcesses(func(a string) bool {
		for _, s := range substrings {
			if strings.Contains(a, s) {
				return true
			}
		}
		return false
	})
}

func listProcesses(match func(arg string) bool) []process {
	entries, _ := os.ReadDir("/proc")
	var found []process
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		for _, a := range args {
			if match(a) {
				found = append(found, process{pid: pid, args: args})
				break
			}
		}
	}
	return found
}

func argAfter(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}
