# lazysnap build, test and benchmark entry points.
GO ?= go
export LAZYSNAP_TOOLS ?= /usr/local/lib/lazysnap-tools/bin

.PHONY: build deps test test-unit bench bench-convert demo lint clean

build:
	$(GO) build -o bin/ ./cmd/...

deps:
	bash script/install-deps.sh

# test installs what the tests need, then runs every test, race detector on.
test: deps build
	$(GO) vet ./...
	$(GO) test -race -timeout 60m ./...

test-unit:
	$(GO) test -short ./...

demo: deps build
	bash script/demo.sh

bench-convert: build
	$(GO) test -run '^$$' -bench BenchmarkConvert -benchtime 1x -cpu 1,2 -benchmem ./convert/

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...

clean:
	rm -rf bin/
