#!/usr/bin/env python3
"""Each target of issue 12, per image, from one `make bench` run.

    script/targets.py bench-results/RUN/results.json [...]

Needs a run with the local, overlayfs, lazysnap, lazysnap-traced, stargz
and stargz-optimized modes (`-modes local,overlayfs,lazysnap,lazysnap-traced,
stargz,stargz-optimized`). Prints one Markdown table per run: the measured
ratio for each target, marked "miss" where it is over the target.

"What the workload read" is approximated, as for the floor (docs/bench.md,
"The physical floor"), by the fewest MB any lazy mode of the run fetched
before ready: no mode starts the workload with less than it reads.
"""
import json
import sys

PLAIN, LEARNED = "lazysnap", "lazysnap-traced"

# (column, target, function of (summaries of one image, its floor) -> ratio)
TARGETS = [
    ("plain x full", 0.8, lambda s, f: ready(s, PLAIN) / ready(s, "overlayfs")),
    ("plain x stargz", 0.7, lambda s, f: ready(s, PLAIN) / ready(s, "stargz")),
    ("learned x full", 0.2, lambda s, f: ready(s, LEARNED) / ready(s, "overlayfs")),
    ("learned x stargz-opt", 0.6, lambda s, f: ready(s, LEARNED) / ready(s, "stargz-optimized")),
    ("plain x floor", 1.3, lambda s, f: ready(s, PLAIN) / f["seconds"]),
    ("learned x floor", 1.3, lambda s, f: ready(s, LEARNED) / f["seconds"]),
    ("plain MB total x full", 1.1, lambda s, f: mb(s, PLAIN, "mb_total") / mb(s, "overlayfs", "mb_total")),
    ("plain MB@ready x read", 1.3, lambda s, f: mb(s, PLAIN, "mb_at_ready") / f["mb_needed"]),
    ("learned MB@ready x read", 1.3, lambda s, f: mb(s, LEARNED, "mb_at_ready") / f["mb_needed"]),
]


def ready(s, mode):
    return s[mode]["ready_seconds"]["median"]


def mb(s, mode, field):
    return s[mode][field]["median"]


def table(path):
    r = json.load(open(path))
    c = r["config"]
    floors = {f["workload"]: f for f in r.get("floors", [])}
    by_image = {}
    for x in r["summaries"]:
        by_image.setdefault(x["workload"], {})[x["mode"]] = x
    print(f"{c['rate_mbit']:.0f} Mbit/s + {c['delay_ms']:.0f} ms ({path}); "
          "target in brackets, **miss** over it:\n")
    print("| image | " + " | ".join(f"{name} (<= {t})" for name, t, _ in TARGETS) + " |")
    print("|---" * (len(TARGETS) + 1) + "|")
    misses = {name: 0 for name, _, _ in TARGETS}
    for w in [w["name"] for w in c["workloads"]]:
        cells = []
        for name, target, ratio in TARGETS:
            try:
                x = ratio(by_image[w], floors[w])
            except KeyError:
                cells.append("n/a")
                continue
            miss = x > target
            misses[name] += miss
            shown = f"{x:.2f}"
            if float(shown) == target:
                shown = f"{x:.3f}"  # which side of the target it is on
            cells.append(f"**{shown} miss**" if miss else shown)
        print(f"| {w} | " + " | ".join(cells) + " |")
    print("| misses | " + " | ".join(str(misses[name]) for name, _, _ in TARGETS) + " |")
    print()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        table(path)


if __name__ == "__main__":
    main()
