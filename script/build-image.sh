#!/usr/bin/env bash
# Build the DaemonSet's image without a container engine and push it:
#   script/build-image.sh REGISTRY [TAG]
# e.g. script/build-image.sh localhost:5000/lazysnap  (pushes
# localhost:5000/lazysnap/lazysnap-installer:latest). Set INSECURE=1 for a
# plain-HTTP registry. The binaries are static (script/build-static.sh); busybox comes
# from Debian's busybox-static (BUSYBOX=PATH to use another static one).
set -euo pipefail

cd "$(dirname "$0")/.."
REGISTRY=${1:?usage: $0 REGISTRY [TAG]}
TAG=${2:-latest}
BUSYBOX=${BUSYBOX:-/bin/busybox}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

if ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
	echo "$BUSYBOX is not a static busybox (apt-get install busybox-static)" >&2
	exit 1
fi
bash script/build-static.sh "$out"

args=(build-image --binaries "$out" --busybox "$BUSYBOX" --push "$REGISTRY/lazysnap-installer:$TAG")
if [[ -n "${INSECURE:-}" ]]; then
	args+=(--insecure)
fi
"$out/lazysnap-install" "${args[@]}"
