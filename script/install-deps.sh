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

TOOLS=${LAZYSNAP_TOOLS:-/usr/local/lib/lazysnap-tools/bin}
STAMPS="$TOOLS/.stamps"
mkdir -p "$TOOLS" "$STAMPS"

log() { printf '[install-deps] %s\n' "$*" >&2; }

apt_packages=(fuse3 libseccomp-dev pkg-config iproute2 mmdebstrap busybox-static umoci skopeo)
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

log "tools ready in $TOOLS"
