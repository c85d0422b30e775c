#!/usr/bin/env python3
"""What each time target of issue 12 asks for, as a multiple of the physical floor.

    script/targets-vs-floor.py bench-results/RUN/results.json [...]

A target set as a share of another mode's time (the full pull's, the stargz
snapshotter's) is a fixed number of seconds; divided by the image's floor
(docs/bench.md, "The physical floor") it says whether any lazy start could
meet it. Needs a run with the local, overlayfs, stargz and
stargz-optimized modes. Prints Markdown tables.
"""
import json
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        r = json.load(open(path))
        s = {(x["workload"], x["mode"]): x for x in r["summaries"]}
        floors = {f["workload"]: f for f in r.get("floors", [])}
        c = r["config"]
        print(f"{c['rate_mbit']:.0f} Mbit/s + {c['delay_ms']:.0f} ms ({path}):\n")
        print("| image | floor s | 0.8 x full | 0.7 x stargz | 0.2 x full | 0.6 x stargz-opt |")
        print("|---|---|---|---|---|---|")
        for w in [w["name"] for w in c["workloads"]]:
            def ready(mode):
                return s[(w, mode)]["ready_seconds"]["median"]
            floor = floors[w]["seconds"]
            cells = []
            for want in (0.8 * ready("overlayfs"), 0.7 * ready("stargz"),
                         0.2 * ready("overlayfs"), 0.6 * ready("stargz-optimized")):
                x = want / floor
                cells.append(f"{want:.2f} s = {x:.2f}x" + (" **below floor**" if x < 1 else ""))
            print(f"| {w} | {floor:.2f} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
