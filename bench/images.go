package bench

import (
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// DefaultWorkloads is the HelloBench-style set, built from Debian bookworm
// packages (testenv.DebianImage caches the layers, so only the first run
// needs the Debian mirror). The default run uses the first one only.
func DefaultWorkloads() []Workload {
	return []Workload{pythonNumpy(), gccHello(), redisServer()}
}

// pythonNumpy imports numpy: a large image (python3 and numpy with their
// libraries) of which start-up reads a modest part.
func pythonNumpy() Workload {
	return Workload{
		Name:  "python",
		Cmd:   []string{"python3", "-c", `import numpy; print("ready", numpy.__version__)`},
		Ready: ReadySignal{Line: "ready"},
		Build: debianBuild("bench-python:1", "python3", "python3-numpy"),
	}
}

// gccHello compiles and runs hello world: the compiler, assembler, linker
// and C library headers are read.
func gccHello() Workload {
	script := `printf '#include <stdio.h>\nint main(void){puts("ready");return 0;}\n' >/tmp/h.c` +
		` && gcc -O2 -o /tmp/h /tmp/h.c && /tmp/h`
	return Workload{
		Name:  "gcc",
		Cmd:   []string{"/bin/sh", "-c", script},
		Ready: ReadySignal{Line: "ready"},
		Build: debianBuild("bench-gcc:1", "gcc", "libc6-dev"),
	}
}

// redisServer starts a database and waits until a client gets an answer
// (a probe, as a readiness probe would). It listens on a port of its own
// because containers share the host network.
func redisServer() Workload {
	return Workload{
		Name: "redis",
		Cmd: []string{"redis-server", "--port", "16379", "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no"},
		Ready:      ReadySignal{Probe: []string{"redis-cli", "-p", "16379", "ping"}},
		RecordLine: "Ready to accept connections",
		Build:      debianBuild("bench-redis:1", "redis-server", "redis-tools"),
	}
}

func debianBuild(repoTag string, packages ...string) func(testing.TB, *testenv.Registry) *testenv.Image {
	return func(tb testing.TB, reg *testenv.Registry) *testenv.Image {
		return testenv.DebianImage(tb, reg, repoTag, packages)
	}
}
