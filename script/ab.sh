#!/bin/bash
# A/B two lazysnap builds in turn, so that both see the same machine and
# link over the same minutes (docs/bench.md, "Comparing two builds").
#
#   script/ab.sh NEW_BIN BASE_BIN ROUNDS OUT [bench flags...]
#   script/ab.sh /tmp/new/lazysnap bin/lazysnap 3 /tmp/ab-gcc \
#       -images gcc,node -modes lazysnap -rate 200 -delay 20ms
#
# Each round runs the benchmark once with NEW_BIN, then once with BASE_BIN
# (LAZYSNAP_BIN), one repetition each, into OUT/new-N and OUT/base-N, and
# prints each image's line. Needs `make deps` and `make build` (lazyconv
# and the benchmark's tools); builds the benchmark binary into OUT.
set -euo pipefail
if [ $# -lt 4 ]; then
	sed -n '2,12p' "$0"
	exit 2
fi
new=$(realpath "$1") base=$(realpath "$2") rounds=$3 out=$(realpath -m "$4")
shift 4
repo=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/local/lib/lazysnap-tools/bin:$PATH LAZYSNAP_TOOLS=/usr/local/lib/lazysnap-tools/bin
mkdir -p "$out"
(cd "$repo" && go test ${GOFLAGS:--tags=libdeflate} -c -o "$out/bench.test" ./bench)
cd "$repo/bench"
for i in $(seq 1 "$rounds"); do
	for v in new base; do
		bin=$new
		[ "$v" = base ] && bin=$base
		dir=$out/$v-$i
		mkdir -p "$dir"
		LAZYSNAP_BIN=$bin "$out/bench.test" -test.run '^$' -test.bench BenchmarkStartup -test.benchtime 1x \
			-reps 1 -out "$dir" "$@" >"$dir/log" 2>&1
		echo "$v $i: $(grep -E '^[a-z0-9-]+ +lazysnap' "$dir/log" | cut -c1-100 | tr '\n' ';')"
	done
done
