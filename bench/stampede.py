#!/usr/bin/env python3
"""N clients request one uncached URL at the same instant; prints how long
the slowest and the median waited, in ms."""
import http.client
import sys
import threading
import time
from urllib.parse import urlsplit

url, n = sys.argv[1], int(sys.argv[2])
u = urlsplit(url)
barrier = threading.Barrier(n + 1)
times, statuses = [], []
lock = threading.Lock()


def worker():
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.connect()
    barrier.wait()
    t0 = time.perf_counter()
    conn.request("GET", u.path + ("?" + u.query if u.query else ""))
    r = conn.getresponse()
    r.read()
    dt = (time.perf_counter() - t0) * 1000
    with lock:
        times.append(dt)
        statuses.append(r.status)


threads = [threading.Thread(target=worker) for _ in range(n)]
for t in threads:
    t.start()
barrier.wait()
for t in threads:
    t.join()
times.sort()
ok = sum(1 for s in statuses if s == 200)
print(f"{ok}/{n} ok  median {times[len(times)//2]:.0f} ms  slowest {times[-1]:.0f} ms")
