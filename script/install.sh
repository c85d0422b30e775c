#!/usr/bin/env bash
# Install lazysnap on this host (no Kubernetes): builds the binaries unless
# BIN_DIR already holds them, then runs the same installer the DaemonSet
# runs, against "/". Extra arguments go to `lazysnap-install install`
# (for example --containerd-config PATH). Idempotent.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN_DIR=${BIN_DIR:-bin}

if [[ ! -x "$BIN_DIR/lazysnap" || ! -x "$BIN_DIR/lazysnap-install" ]]; then
	echo "building lazysnap and lazysnap-install into $BIN_DIR" >&2
	bash script/build-static.sh "$BIN_DIR"
fi

exec "$BIN_DIR/lazysnap-install" install \
	--binary "$BIN_DIR/lazysnap" \
	--installer-binary "$BIN_DIR/lazysnap-install" \
	--host-root / "$@"
