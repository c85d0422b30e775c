#!/usr/bin/env python3
"""Where the node's CPU went while each case started, from a system-wide profile.

    perf record -a -F 999 -g -k CLOCK_REALTIME -o perf.data -- bench.test ... -out OUT
    perf script -i perf.data -F comm,pid,time > samples.txt
    script/cpu-by-case.py OUT/results.json samples.txt [BUCKET_SECONDS] [REP]

Each case's `started` (the wall clock at pull start) lines the profile up
with the case: for every bucket (default 0.1 s) from pull start to ready,
the share of the samples of both cores that each group of processes took,
idle included, then the whole case's. A case whose idle share is near zero
is bound by the CPU, not by the link. REP picks one repetition (default 1).
"""
import bisect
import collections
import datetime
import json
import sys

GROUPS = ['idle', 'lazysnap', 'stargz', 'containerd', 'runc', 'bench', 'registry', 'toxiproxy', 'workload']


def group(comm):
    if comm == 'swapper':
        return 'idle'
    for prefix, g in (('lazysnap', 'lazysnap'), ('containerd-sta', 'stargz'), ('containerd', 'containerd'),
                      ('runc', 'runc'), ('bench.test', 'bench'), ('registry', 'registry'),
                      ('toxiproxy', 'toxiproxy')):
        if comm.startswith(prefix):
            return g
    return 'workload'


def samples(path):
    out = []
    for line in open(path):
        parts = line.split()
        if len(parts) < 3:
            continue
        out.append((float(parts[-1].rstrip(':')), ' '.join(parts[:-2])))
    out.sort()
    return out


def shares(counter):
    n = sum(counter.values()) or 1
    return ' '.join('%9.0f%%' % (100 * counter[g] / n) for g in GROUPS)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    results = json.load(open(sys.argv[1]))['results']
    ss = samples(sys.argv[2])
    times = [t for t, _ in ss]
    bucket = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
    rep = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    for r in results:
        if r['rep'] != rep or 'started' not in r:
            continue
        start = datetime.datetime.fromisoformat(r['started'].replace('Z', '+00:00')).timestamp()
        end = start + r['ready_seconds']
        print('%s %s: pull %.2f s, create %.2f s, ready %.2f s' % (
            r['workload'], r['mode'], r['pull_seconds'], r['create_seconds'], r['ready_seconds']))
        print('     t ' + ' '.join('%10s' % g for g in GROUPS))
        whole = collections.Counter()
        t = start
        while t < end:
            i, j = bisect.bisect_left(times, t), bisect.bisect_left(times, min(t + bucket, end))
            c = collections.Counter(group(comm) for _, comm in ss[i:j])
            whole += c
            print('%6.2f %s' % (t - start, shares(c)))
            t += bucket
        print('   all %s\n' % shares(whole))


if __name__ == '__main__':
    main()
