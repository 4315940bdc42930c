#!/usr/bin/env python3
"""Adds new pages through a cache at a fixed rate (each a miss that the
cache fetches and stores) for a fixed time; prints its own latencies."""
import http.client
import sys
import threading
import time

host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
tag = sys.argv[5] if len(sys.argv) > 5 else "new"
lat, lock = [], threading.Lock()
workers = 8


def work(k):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    interval = workers / rate
    start = time.perf_counter()
    i = k
    while True:
        due = start + (i // workers) * interval
        now = time.perf_counter()
        if now - start > seconds:
            break
        if due > now:
            time.sleep(due - now)
        t = time.perf_counter()
        conn.request("GET", f"/{tag}/{i}")
        conn.getresponse().read()
        with lock:
            lat.append((time.perf_counter() - t) * 1000)
        i += workers


threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
for th in threads:
    th.start()
for th in threads:
    th.join()
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]
print(f"writer: {len(lat)} new pages ({len(lat) / seconds:.0f}/s), p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {lat[-1]:.1f} ms")
