#!/usr/bin/env python3
"""Polls URL until it is served from the cache (X-Cache: HIT) and prints how
many milliseconds that was after T0 (unix nanoseconds, taken just before
the server was started): startup time to the first served hit."""
import http.client
import sys
import time
from urllib.parse import urlsplit

url, t0 = sys.argv[1], int(sys.argv[2])
u = urlsplit(url)
deadline = time.time() + 120
while time.time() < deadline:
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
        c.request("GET", u.path)
        r = c.getresponse()
        r.read()
        if r.status == 200 and r.getheader("X-Cache", "").upper() == "HIT":
            print(f"{(time.time_ns() - t0) / 1e6:.0f}")
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.002)
print("never")
sys.exit(1)
