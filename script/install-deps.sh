#!/usr/bin/env bash
# Installs, idempotently and at pinned versions, everything the tests and the
# benchmark need on a fresh Debian machine: Debian packages and tools built
# from the Go module proxy. Binaries go to $LAZYSNAP_TOOLS (default
# /usr/local/lib/lazysnap-tools/bin) so they never shadow a host's own
# containerd. Safe to run again: anything already at its version is skipped.
set -euo pipefail

CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
REGISTRY_VERSION=v3.1.2
CRANE_VERSION=v0.22.1
TOXIPROXY_VERSION=v2.5.0
CRICTL_VERSION=v1.37.0
CRITEST_VERSION=v1.37.0
CNI_PLUGINS_VERSION=v1.9.0

TOOLS=${LAZYSNAP_TOOLS:-/usr/local/lib/lazysnap-tools/bin}
STAMPS="$TOOLS/.stamps"
mkdir -p "$TOOLS" "$STAMPS"

log() { printf '[install-deps] %s\n' "$*" >&2; }

apt_packages=(fuse3 libseccomp-dev pkg-config iproute2 mmdebstrap busybox-static umoci skopeo gcc libc6-dev zlib1g-dev libdeflate-dev)
missing=()
for p in "${apt_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "apt-get install ${missing[*]}"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# go_tool NAME MODULE/PATH@VERSION [go install flags...]
go_tool() {
	local name=$1 pkg=$2
	shift 2
	local stamp="$STAMPS/$name@${pkg##*@}"
	if [ -x "$TOOLS/$name" ] && [ -f "$stamp" ]; then
		return
	fi
	log "go install $pkg"
	local tmp
	tmp=$(mktemp -d)
	GOBIN=$tmp GOFLAGS=-mod=mod go install "$@" "$pkg"
	mv "$tmp"/* "$TOOLS/$name"
	rmdir "$tmp"
	touch "$stamp"
}

go_tool containerd github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION
go_tool ctr github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION
go_tool containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION
go_tool runc github.com/opencontainers/runc@$RUNC_VERSION -tags seccomp
go_tool registry github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION
go_tool crane github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION
go_tool toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION
go_tool crictl sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION

# critest is a Ginkgo test binary (package main in cmd/critest), not an
# installable command: build it with `go test -c` from a throwaway module that
# requires cri-tools, as cri-tools' own Makefile does.
critest() {
	local stamp="$STAMPS/critest@$CRITEST_VERSION"
	if [ -x "$TOOLS/critest" ] && [ -f "$stamp" ]; then
		return
	fi
	log "go test -c sigs.k8s.io/cri-tools/cmd/critest@$CRITEST_VERSION"
	local tmp
	tmp=$(mktemp -d)
	(
		cd "$tmp"
		go mod init critest-build >/dev/null 2>&1
		GOFLAGS=-mod=mod go get "sigs.k8s.io/cri-tools@$CRITEST_VERSION"
		GOFLAGS=-mod=mod go test -c -o "$tmp/critest" sigs.k8s.io/cri-tools/cmd/critest
	)
	mv "$tmp/critest" "$TOOLS/critest"
	rm -rf "$tmp"
	touch "$stamp"
}
critest

# critest's pods have their own network namespace, which containerd's CRI sets
# up through CNI: the reference plugins go to $TOOLS/cni, not /opt/cni/bin.
cni_plugins() {
	local stamp="$STAMPS/cni-plugins@$CNI_PLUGINS_VERSION"
	if [ -d "$TOOLS/cni" ] && [ -f "$stamp" ]; then
		return
	fi
	log "go install containernetworking/plugins@$CNI_PLUGINS_VERSION"
	mkdir -p "$TOOLS/cni"
	local m=github.com/containernetworking/plugins/plugins
	GOBIN=$TOOLS/cni GOFLAGS=-mod=mod go install "$m/main/bridge@$CNI_PLUGINS_VERSION" \
		"$m/main/loopback@$CNI_PLUGINS_VERSION" "$m/ipam/host-local@$CNI_PLUGINS_VERSION" \
		"$m/meta/portmap@$CNI_PLUGINS_VERSION"
	touch "$stamp"
}
cni_plugins

# The stargz snapshotter, a peer `make bench` runs side by side with
# lazysnap. The proxy does not serve upstream's cmd module, so small mains of
# ours, each in its own module pinned in its go.mod, wrap the published
# packages: tools/peers/stargz is the daemon (containerd-stargz-grpc),
# tools/peers/stargz-optimize its optimizer (analyzer and converter). The
# stamp is the hash of the module's files, so editing them rebuilds it.
# peer_tool NAME DIR (relative to the repository)
peer_tool() {
	local name=$1 dir
	dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/$2"
	local sum
	sum=$(cat "$dir/go.mod" "$dir/go.sum" "$dir"/*.go | sha256sum | cut -c1-16)
	local stamp="$STAMPS/$name@$sum"
	if [ -x "$TOOLS/$name" ] && [ -f "$stamp" ]; then
		return
	fi
	log "go build $2 ($name)"
	(cd "$dir" && GOFLAGS=-mod=mod go build -o "$TOOLS/$name.new" .)
	mv "$TOOLS/$name.new" "$TOOLS/$name"
	rm -f "$STAMPS/$name"@*
	touch "$stamp"
}
peer_tool containerd-stargz-grpc tools/peers/stargz
peer_tool stargz-optimize tools/peers/stargz-optimize
# The SOCI snapshotter (awslabs/soci-snapshotter), likewise from its main
# module: soci-peer serves its snapshotter and builds its indexes. Its zTOC
# code is cgo against zlib (upstream links a static libz.a it builds;
# Debian's zlib1g-dev provides one).
peer_tool soci-peer tools/peers/soci

log "tools ready in $TOOLS"
