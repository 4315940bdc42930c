#!/usr/bin/env python3
"""Requests /<prefix>/<start> .. /<prefix>/<n-1> once each through a cache,
with several keep-alive connections, so every page is stored. Prints the
rate. Arguments: host port prefix n [workers [start]]; POPULATE_AE in the
environment is sent as Accept-Encoding, and POPULATE_RATE (requests/s,
all workers together) paces the requests."""
import http.client
import os
import sys
import threading
import time

host, port, prefix, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
workers = int(sys.argv[5]) if len(sys.argv) > 5 else 8
start = int(sys.argv[6]) if len(sys.argv) > 6 else 0
errors = []
headers = {"Accept-Encoding": os.environ["POPULATE_AE"]} if os.environ.get("POPULATE_AE") else {}
rate = float(os.environ.get("POPULATE_RATE") or 0)


def work(k):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    t0 = time.time()
    for j, i in enumerate(range(start + k, n, workers)):
        if rate:
            ahead = t0 + j * workers / rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
        conn.request("GET", f"/{prefix}/{i}", headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            errors.append(r.status)


t = time.time()
threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
for th in threads:
    th.start()
for th in threads:
    th.join()
dt = time.time() - t
print(f"  stored {n - start} pages in {dt:.0f} s ({(n - start) / dt:.0f}/s), {len(errors)} errors")
