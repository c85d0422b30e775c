#!/usr/bin/env python3
"""Replay a start-up trace through read-ahead rules, without a registry.

    script/replay-tails.py LAYOUT TRACE

LAYOUT is an eStargz image as an OCI layout directory (one of make bench's
plain cached conversions, /var/cache/lazysnap-test/bench/conversions/KEY);
TRACE is the record of the files the workload opened, in order: the
KEY.trace.txt beside a traced conversion of the same image (one absolute
path per line, lines starting with # ignored; each path is looked up in the
top layer that has it), or JSON lines ({"path": ..., "layerIndex": ...}).
For each rule it prints the reads that would miss (one request each) and
the compressed bytes fetched, as fs/layer would with a spool: a file whose
first frame the spool holds is a hit; a miss fetches the file's first
frame, for a small file a raw tail of the bytes stored after it, up to the
rule's budget, and with a read-behind rule the whole frames stored just
before the file, back to a share of the budget, each stopping at bytes
already fetched. It models no timing: docs/design.md ("A tail's length,
learned per layer", "Nor the files before a read") says which rule make
bench then measured.
"""
import bisect
import io
import json
import os
import sys
import tarfile
import zlib

FOOTER = 51  # eStargz's gzip footer


def read_toc(blob):
    """The TOC entries of an eStargz blob, and where the TOC starts."""
    with open(blob, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(size - FOOTER)
        foot = f.read(FOOTER)
        i = foot.find(b"STARGZ")
        off = int(foot[i - 16:i], 16)
        f.seek(off)
        data = f.read(size - FOOTER - off)
    raw = zlib.decompressobj(31).decompress(data)
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        return json.load(t.extractfile("stargz.index.json"))["entries"], off


def layer_frames(blob):
    """path -> [(start, end)] of each chunk's compressed frame, in order."""
    entries, toc_off = read_toc(blob)
    starts = sorted({e["offset"] for e in entries if e.get("offset")})

    def end(o):
        i = bisect.bisect_right(starts, o)
        return starts[i] if i < len(starts) else toc_off

    files = {}
    for e in entries:
        if e.get("offset") and e["type"] in ("reg", "chunk"):
            files.setdefault(e["name"], []).append((e["offset"], end(e["offset"])))
    return files


def layers(layout):
    index = json.load(open(os.path.join(layout, "index.json")))
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.load(open(os.path.join(layout, "blobs", "sha256", digest)))
    return [layer_frames(os.path.join(layout, "blobs", "sha256", l["digest"].split(":")[1]))
            for l in manifest["layers"]]


class Fetched:
    """The blob ranges fetched so far in one layer."""

    def __init__(self):
        self.spans = []

    def add(self, lo, hi):
        self.spans.append((lo, hi))
        self.spans.sort()

    def covers(self, lo, hi):
        at = lo
        for a, b in self.spans:
            if a <= at < b:
                at = b
            if at >= hi:
                return True
        return at >= hi

    def next_start(self, at):
        for a, b in self.spans:
            if b > at:
                return max(a, at)
        return None


class Fixed:
    def __init__(self, budget):
        self.budget = budget

    def next(self):
        return self.budget

    def sent(self, budget):
        pass

    def taken(self):
        pass


class Learned:
    """layer.tailBudget: start small, double per read served, halve per tail unused."""

    def __init__(self, start, limit):
        self.start, self.limit, self.cur, self.unread = min(start, limit), limit, 0, False

    def next(self):
        if self.cur == 0:
            return self.start
        if self.unread:
            return max(self.start, self.cur // 2)
        return min(self.limit, self.cur)

    def sent(self, budget):
        self.cur, self.unread = budget, True

    def taken(self):
        if self.cur:
            self.cur = min(self.limit, self.cur * 2)
        self.unread = False


def replay(frames, trace, make_rule, behind_share=0):
    fetched = [Fetched() for _ in frames]
    rules = [make_rule() for _ in frames]
    starts = [sorted({c[0][0] for c in f.values()}) for f in frames]
    misses = nbytes = 0
    for rec in trace:
        li = rec["layerIndex"]
        chunks = frames[li].get(rec["path"])
        if not chunks:
            continue  # a directory, a symlink, an empty file
        lo, hi = chunks[0]
        if fetched[li].covers(lo, hi):
            rules[li].taken()
            continue
        misses += 1
        tail = 0
        budget = rules[li].next()
        if len(chunks) == 1 and budget:  # a large file's next chunk is its own
            limit = hi + budget
            nxt = fetched[li].next_start(hi)
            if nxt is not None:
                limit = min(limit, nxt)
            tail = max(0, limit - hi)
            if tail:
                rules[li].sent(budget)
        start = lo
        if behind_share:  # whole frames before the file, none fetched yet
            i = bisect.bisect_left(starts[li], lo) - 1
            while i >= 0 and lo - starts[li][i] <= budget // behind_share:
                if fetched[li].covers(starts[li][i], start):
                    break
                start = starts[li][i]
                i -= 1
        fetched[li].add(start, hi + tail)
        nbytes += hi - start + tail
    return misses, nbytes


def read_trace(path, frames):
    """The trace's files as {"path", "layerIndex"}, in the order opened."""
    trace = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            trace.append(json.loads(line))
        elif line and not line.startswith("#"):
            name = line.lstrip("/")
            top = [i for i, f in enumerate(frames) if name in f]
            if top:
                trace.append({"path": name, "layerIndex": top[-1]})
    return trace


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    frames = layers(sys.argv[1])
    trace = read_trace(sys.argv[2], frames)
    mib = 1 << 20
    rules = [
        ("no tail", lambda: Fixed(0), 0),
        ("fixed 1 MiB", lambda: Fixed(mib), 0),
        ("fixed 4 MiB", lambda: Fixed(4 * mib), 0),
        ("learned 128 KiB..1 MiB", lambda: Learned(128 << 10, mib), 0),
        ("learned 128 KiB..4 MiB", lambda: Learned(128 << 10, 4 * mib), 0),
        ("  + read-behind of 1/2", lambda: Learned(128 << 10, 4 * mib), 2),
        ("  + read-behind of 1/4", lambda: Learned(128 << 10, 4 * mib), 4),
        ("  + read-behind of 1/8", lambda: Learned(128 << 10, 4 * mib), 8),
    ]
    for name, rule, behind in rules:
        misses, nbytes = replay(frames, trace, rule, behind)
        print(f"{name:24} {misses:5d} misses {nbytes / 1e6:8.1f} MB")


if __name__ == "__main__":
    main()
