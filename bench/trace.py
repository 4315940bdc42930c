#!/usr/bin/env python3
"""Request traces for the disk-budget benchmark, and what exact LRU and FIFO
caches of the same size make of them.

  trace.py gen PAGES REQUESTS KIND OUT    write a trace, one page number per line
  trace.py sim TRACE CAPACITY             hit ratios of LRU and FIFO holding
                                          CAPACITY pages (all pages one size)
  trace.py top PAGES K OUT                the K most popular pages of the
                                          Zipf traces, one per line

KIND is `zipf` (popularity Zipf(0.9) over PAGES pages, ranks shuffled so
popularity is not page order) or `scan` (REQUESTS/2 of the same Zipf stream
with a crawler mixed in: after each Zipf request, one for the next page of
0..PAGES-1, until the crawler has walked every page once).
The generator is seeded: the same arguments give the same trace.
"""
import collections
import itertools
import random
import sys


def popularity(pages: int, rnd: random.Random):
    """Page numbers by popularity rank: ranks shuffled over the pages."""
    ranks = list(range(pages))
    rnd.shuffle(ranks)
    return ranks


def zipf_stream(pages: int, n: int, rnd: random.Random):
    weights = [1.0 / (r ** 0.9) for r in range(1, pages + 1)]
    cum = list(itertools.accumulate(weights))
    ranks = popularity(pages, rnd)
    picks = rnd.choices(range(pages), cum_weights=cum, k=n)
    return [ranks[p] for p in picks]


def gen(pages: int, requests: int, kind: str, out: str):
    rnd = random.Random(9)
    if kind == "zipf":
        trace = zipf_stream(pages, requests, rnd)
    elif kind == "scan":
        # Half the requests' worth of the Zipf stream, a crawler request
        # after each until every page has been walked once.
        z = zipf_stream(pages, requests // 2, rnd)
        trace, crawl = [], iter(range(pages))
        for p in z:
            trace.append(p)
            c = next(crawl, None)
            if c is not None:
                trace.append(c)
        trace.extend(crawl)
    else:
        sys.exit(f"unknown trace kind {kind}")
    with open(out, "w") as f:
        f.write("\n".join(map(str, trace)))
        f.write("\n")


def sim(path: str, capacity: int):
    trace = [int(line) for line in open(path)]
    lru, hits_lru = collections.OrderedDict(), 0
    fifo, fifo_set, hits_fifo = collections.deque(), set(), 0
    for p in trace:
        if p in lru:
            hits_lru += 1
            lru.move_to_end(p)
        else:
            lru[p] = None
            if len(lru) > capacity:
                lru.popitem(last=False)
        if p in fifo_set:
            hits_fifo += 1
        else:
            fifo.append(p)
            fifo_set.add(p)
            if len(fifo) > capacity:
                fifo_set.discard(fifo.popleft())
    n = len(trace)
    print(f"{n} {len(set(trace))} {hits_lru / n:.4f} {hits_fifo / n:.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif sys.argv[1] == "sim":
        sim(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "top":
        ranks = popularity(int(sys.argv[2]), random.Random(9))
        with open(sys.argv[4], "w") as f:
            f.write("\n".join(map(str, ranks[: int(sys.argv[3])])) + "\n")
    else:
        sys.exit(__doc__)
