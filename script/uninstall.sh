#!/usr/bin/env bash
# Remove lazysnap from this host: restores containerd's config, stops and
# removes lazysnap. Pass --purge to also delete its cache (/var/lib/lazysnap).
# Uses the installed lazysnap-install, or BIN_DIR's.
set -euo pipefail

cd "$(dirname "$0")/.."
installer=/usr/local/bin/lazysnap-install
if [[ ! -x "$installer" ]]; then
	installer=${BIN_DIR:-bin}/lazysnap-install
fi
if [[ ! -x "$installer" ]]; then
	echo "no lazysnap-install found: is lazysnap installed?" >&2
	exit 1
fi
# Copy it first: uninstall removes /usr/local/bin/lazysnap-install.
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cp "$installer" "$tmp"
chmod +x "$tmp"
"$tmp" uninstall --host-root / "$@"
