# lazysnap build, test and benchmark entry points.
GO ?= go
export LAZYSNAP_TOOLS ?= /usr/local/lib/lazysnap-tools/bin
# Every build and test links libdeflate, the gzip decoder of the read path
# (internal/inflate; make deps installs libdeflate-dev). A plain `go build`
# without the tag is pure Go and decompresses about 3x slower.
export GOFLAGS ?= -tags=libdeflate

.PHONY: build deps test test-unit critest soak bench bench-convert demo image lint clean

build:
	$(GO) build -o bin/ ./cmd/...

deps:
	bash script/install-deps.sh

# test installs what the tests need, then runs every test, race detector on,
# and then, without it, the tests that count allocations (sync.Pool drops a
# random share of what it is given under the race detector, so they skip
# there).
test: deps build
	$(GO) vet ./...
	$(GO) test -race -timeout 60m ./...
	$(GO) test -count=1 -run '^(TestFramesReused|TestChunkBufsReuse)$$' ./fs/layer

test-unit:
	$(GO) test -short ./...

# critest runs the whole CRI validation suite (cri-tools' critest) on
# containerd with overlayfs, then with lazysnap, and prints the counts of
# both and every spec whose result differs (docs/compat.md). About 5 minutes.
critest: deps build
	LAZYSNAP_CRITEST_FULL=1 $(GO) test -count=1 -run '^TestCritestFull$$' -v -timeout 60m ./integration/

demo: deps build
	bash script/demo.sh

# bench is the start-up benchmark: registry behind a shaped link, containerd,
# runc and lazysnap, all started under a private folder and torn down after.
# Flags: make bench BENCH_ARGS="-rate 1000 -delay 2ms -reps 3 -images python -full"
bench: deps build
	$(GO) test -run '^$$' -bench BenchmarkStartup -benchtime 1x -timeout 120m ./bench/ -args $(BENCH_ARGS)

# soak keeps 21 containers reading random files of three lazy images for
# SOAK while fused, serve, containerd and the registry fail in turn, then
# checks every sum they computed; `make test` runs it for 45 s.
SOAK ?= 10m
soak: deps build
	$(GO) test -v -run '^TestSoak$$' -timeout 60m ./integration/ -args -soak=$(SOAK)

# bench-convert converts a generated one-layer 1 GiB image (LAZYCONV_BENCH_MB,
# LAZYCONV_BENCH_LAYERS change it) on one core, then on two, BENCH_CONVERT_REPS
# times, interleaved. taskset pins the whole process, so the kernel's work in
# its file reads and writes counts too: -cpu 1 alone would only bound the
# goroutines running Go code, and the syscalls would take the other core.
BENCH_CONVERT_REPS ?= 3
bench-convert:
	$(GO) test -c -o bin/convert.test ./convert/
	@for i in $$(seq $(BENCH_CONVERT_REPS)); do \
		for cpus in 0 0,1; do \
			echo "load average: $$(cut -d' ' -f1-3 /proc/loadavg), cores $$cpus"; \
			taskset -c $$cpus bin/convert.test -test.run '^$$' -test.bench BenchmarkConvert \
				-test.benchtime 1x -test.benchmem | grep '^Benchmark' || exit 1; \
		done; \
	done

# image builds the DaemonSet's installer image without Docker and pushes it:
#   make image REGISTRY=localhost:5000/lazysnap [TAG=v0.1] [INSECURE=1]
image:
	bash script/build-image.sh $(REGISTRY) $(or $(TAG),latest)

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...

clean:
	rm -rf bin/
