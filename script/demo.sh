#!/usr/bin/env bash
# demo.sh: convert a small generated image with lazyconv and show what changed.
#
# Starts a private registry (the pinned distribution binary) on a free port,
# pushes a two-layer image built from generated files with `crane append`
# (the second layer lists usr/local/bin/app but not its parents, as apt-built
# layers do), converts it with a prioritize list, verifies the result, and
# prints each layer before and after. Everything is removed on exit.
set -euo pipefail

TOOLS=${LAZYSNAP_TOOLS:-/usr/local/lib/lazysnap-tools/bin}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAZYCONV=$ROOT/bin/lazyconv
CRANE=$TOOLS/crane
for bin in "$LAZYCONV" "$CRANE" "$TOOLS/registry"; do
	[[ -x $bin ]] || { echo "demo: $bin missing (run make build deps)" >&2; exit 1; }
done

WORK=$(mktemp -d)
REG_PID=
cleanup() {
	if [[ -n $REG_PID ]] && [[ $(cat /proc/"$REG_PID"/comm 2>/dev/null) == registry ]]; then
		kill "$REG_PID" 2>/dev/null || true
		wait "$REG_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
cat >"$WORK/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $REG}
YML
"$TOOLS/registry" serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
	(exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
	sleep 0.1
done

echo "== building a sample image in $REG/demo:v1"
mkdir -p "$WORK/l1/usr/bin" "$WORK/l1/etc" "$WORK/l2/usr/local/bin"
head -c $((8 << 20)) /dev/urandom >"$WORK/l1/usr/bin/big"
seq 1 200000 >"$WORK/l1/usr/bin/numbers"
echo "greeting=hello" >"$WORK/l1/etc/config"
printf '#!/bin/sh\necho app\n' >"$WORK/l2/usr/local/bin/app"
chmod 755 "$WORK/l2/usr/local/bin/app"
TAROPTS=(--owner=0 --group=0 --numeric-owner --mtime=2024-01-01 --sort=name)
tar "${TAROPTS[@]}" -C "$WORK/l1" -cf "$WORK/layer1.tar" usr etc
# Only the file: no usr/, usr/local/ or usr/local/bin/ entries.
tar "${TAROPTS[@]}" -C "$WORK/l2" -cf "$WORK/layer2.tar" usr/local/bin/app
"$CRANE" append --insecure --oci-empty-base -f "$WORK/layer1.tar" -t "$REG/demo:v1" >/dev/null 2>&1
"$CRANE" append --insecure -b "$REG/demo:v1" -f "$WORK/layer2.tar" -t "$REG/demo:v1" >/dev/null 2>&1

cat >"$WORK/prioritize.txt" <<'LIST'
# files the workload reads first, in order
/usr/local/bin/app
/etc/config
/usr/bin/big
/not/in/the/image
LIST

echo "== lazyconv convert --prioritize (one unknown path: expect a warning)"
"$LAZYCONV" --plain-http convert --prioritize "$WORK/prioritize.txt" "$REG/demo:v1" "$REG/demo:esgz"
echo "== converting again is a no-op (same digest)"
"$LAZYCONV" --plain-http --quiet convert "$REG/demo:esgz" "$REG/demo:esgz2"

echo "== lazyconv verify"
"$LAZYCONV" --plain-http verify "$REG/demo:esgz"

echo "== layers before and after"
show() {
	"$CRANE" manifest --insecure "$1" | jq -r '.layers | to_entries[] |
		"  layer \(.key): \(.value.digest[7:19]) \(.value.mediaType) size=\(.value.size) toc=\(.value.annotations["containerd.io/snapshot/stargz/toc.digest"] // "-" | .[0:19]) uncompressed=\(.value.annotations["io.containers.estargz.uncompressed-size"] // "-")"'
}
echo "before ($REG/demo:v1):"; show "$REG/demo:v1"
echo "after ($REG/demo:esgz):"; show "$REG/demo:esgz"
