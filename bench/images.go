package bench

import (
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// DefaultWorkloads is the HelloBench-style set, built from Debian bookworm
// packages (testenv.DebianImage caches the layers, so only the first run
// needs the Debian mirror), then the kinds of images users run: a
// scientific Python stack, a JVM and a node.js server. The default run uses
// the first one only; -full runs them all.
func DefaultWorkloads() []Workload {
	return []Workload{pythonNumpy(), gccHello(), redisServer(), scipyStack(), jvmStart(), nodeServer()}
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

// scipyStack imports scipy, pandas and matplotlib (with the Agg backend, as
// a batch job plots): a data-science image whose start-up reads well over a
// thousand small files (.py, .pyc and extension modules) spread over a
// large image, where lazy pulling pays per file.
func scipyStack() Workload {
	script := `import matplotlib; matplotlib.use("Agg")
import scipy.stats, scipy.optimize, scipy.signal, pandas, matplotlib.pyplot
print("ready", scipy.__version__, pandas.__version__, matplotlib.__version__)`
	return Workload{
		Name:  "scipy",
		Cmd:   []string{"python3", "-c", script},
		Ready: ReadySignal{Line: "ready"},
		Build: debianBuild("bench-scipy:1", "python3-scipy", "python3-pandas", "python3-matplotlib"),
	}
}

// jvmStart starts the JVM and prints every setting (the properties, the
// locale and security set-up), reading the class data archive and the
// modules image (lib/modules, one large file read in parts), then says
// ready: a JVM's start-up without an application of its own (the JRE has
// no compiler to build one in the image).
func jvmStart() Workload {
	return Workload{
		Name:  "jvm",
		Cmd:   []string{"/bin/sh", "-c", "java -XshowSettings:all -version 2>&1 && echo ready"},
		Ready: ReadySignal{Line: "ready"},
		Build: debianBuild("bench-jvm:1", "openjdk-17-jre-headless"),
	}
}

// nodeServer starts an HTTP server on node.js and is ready when a request
// through a socket of the container's bash gets its answer (a probe, as a
// readiness probe would), on a port of its own (containers share the host
// network).
func nodeServer() Workload {
	server := `const http = require("http");
http.createServer((req, res) => res.end("ok\n")).listen(18080, "127.0.0.1", () => console.log("listening"));`
	probe := `exec 3<>/dev/tcp/127.0.0.1/18080 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && grep -q '^ok' <&3`
	return Workload{
		Name:       "node",
		Cmd:        []string{"node", "-e", server},
		Ready:      ReadySignal{Probe: []string{"bash", "-c", probe}},
		RecordLine: "listening",
		Build:      debianBuild("bench-node:1", "nodejs"),
	}
}

// HeldOutWorkloads are images kept out of the default set, to check that
// what was tuned on that set holds on an image it was not tuned on. They
// are chosen by name with -images and are not part of -full.
func HeldOutWorkloads() []Workload {
	return []Workload{postgresServer()}
}

// postgresServer starts PostgreSQL on the cluster the Debian package
// created, as its own user, and is ready when the server says it accepts
// connections: a database server of another kind than redis, whose
// start-up reads its catalog, configuration, locale and time zone data.
func postgresServer() Workload {
	return Workload{
		Name: "postgres",
		Cmd: []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
			"/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/15/main",
			"-c", "config_file=/etc/postgresql/15/main/postgresql.conf", "-c", "port=15432",
			"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=/tmp", "-c", "ssl=off",
			"-c", "external_pid_file="},
		Ready: ReadySignal{Line: "database system is ready to accept connections"},
		Build: debianBuild("bench-postgres:1", "postgresql-15"),
	}
}

func debianBuild(repoTag string, packages ...string) func(testing.TB, *testenv.Registry) *testenv.Image {
	return func(tb testing.TB, reg *testenv.Registry) *testenv.Image {
		return testenv.DebianImage(tb, reg, repoTag, packages)
	}
}
