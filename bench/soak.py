#!/usr/bin/env python3
"""A bounded soak: mixed traffic at a fixed rate against a running bigcache,
sampling the server's RSS, open file descriptors and threads every minute.

Each tick (10 per second) sends, in order: HITS requests for warm pages,
MISSES requests for pages never seen before (each stored), one REST write of
a 4 KiB value, and every PURGE_EVERY ticks a purge of one stored page and a
REST delete. The run stops by itself after --minutes; the output is one row
per minute, then the change from the first row to the last.

    python3 bench/soak.py --proxy 127.0.0.1:P --api 127.0.0.1:A --pid PID --minutes 30
"""
import argparse
import http.client
import json
import os
import random
import time

TICK = 0.1


def sample(pid: int) -> dict:
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    return {
        "rss_mb": int(status["VmRSS"].split()[0]) // 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
    }


class Client:
    """One keep-alive connection, reopened if the server closes it."""

    def __init__(self, addr: str):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.conn = None

    def request(self, method: str, path: str, body: bytes = None, headers=None) -> int:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                res = self.conn.getresponse()
                res.read()
                return res.status
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--api", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--hits", type=int, default=20, help="warm-page requests per tick")
    ap.add_argument("--misses", type=int, default=2, help="new-page requests per tick")
    ap.add_argument("--purge-every", type=int, default=5, help="ticks between purges")
    ap.add_argument("--warm", type=int, default=1000, help="warm pages")
    args = ap.parse_args()

    proxy, api = Client(args.proxy), Client(args.api)
    rnd = random.Random(1)
    value = json.dumps({"value": "x" * 4096, "duration": "10m"}).encode()
    json_headers = {"Content-Type": "application/json"}
    for i in range(args.warm):
        proxy.request("GET", f"/page/{i}")

    rows, errors, sent = [], 0, 0
    new_page, writes = 0, 0
    start = time.monotonic()
    next_sample = start
    end = start + args.minutes * 60
    tick = 0
    print(f"{'minute':>6} {'rss_mb':>7} {'fds':>5} {'threads':>7} {'requests':>9} {'errors':>6}")
    while True:
        now = time.monotonic()
        if now >= next_sample:
            s = sample(args.pid)
            s["minute"] = round((now - start) / 60)
            s["requests"], s["errors"] = sent, errors
            rows.append(s)
            print(f"{s['minute']:>6} {s['rss_mb']:>7} {s['fds']:>5} {s['threads']:>7} {sent:>9} {errors:>6}", flush=True)
            next_sample += 60
        if now >= end:
            break
        for _ in range(args.hits):
            st = proxy.request("GET", f"/page/{rnd.randrange(args.warm)}")
            sent += 1
            errors += st != 200
        for _ in range(args.misses):
            st = proxy.request("GET", f"/soak/{new_page}")
            new_page += 1
            sent += 1
            errors += st != 200
        st = api.request("POST", f"/cache/soak/{writes % 5000}", value, json_headers)
        writes += 1
        sent += 1
        errors += st != 200
        if tick % args.purge_every == 0 and new_page:
            st = api.request("DELETE", f"/cache//soak/{rnd.randrange(new_page)}")
            sent += 1
            errors += st not in (200, 404)
            st = api.request("DELETE", f"/cache/soak/{rnd.randrange(5000)}")
            sent += 1
            errors += st not in (200, 404)
        tick += 1
        time.sleep(max(0.0, start + tick * TICK - time.monotonic()))

    first, last = rows[0], rows[-1]
    print(f"change over the run: rss {last['rss_mb'] - first['rss_mb']:+} MB, "
          f"fds {last['fds'] - first['fds']:+}, threads {last['threads'] - first['threads']:+}; "
          f"{sent} requests, {errors} errors, {new_page} pages stored")


if __name__ == "__main__":
    main()
