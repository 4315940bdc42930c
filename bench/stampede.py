#!/usr/bin/env python3
"""N clients request one uncached URL at the same instant (curl --parallel:
one C process, so the client adds no spread of its own; a Python thread
per client added ~35 ms). Prints the first, median and slowest response
times, and for the slowest, how long after the origin's answer it was
served at most: its time minus the origin's delay (an upper bound, since
it still includes connecting and sending the request).

Arguments: url n origin_delay_ms."""
import subprocess
import sys

url, n, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
args = ["curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", str(n),
        "-w", "%{http_code} %{time_total}\\n"]
for _ in range(n):
    args += ["-o", "/dev/null", url]
out = subprocess.run(args, capture_output=True, text=True, check=False).stdout.split("\n")
rows = [line.split() for line in out if line.strip()]
ok = sum(1 for code, _ in rows if code == "200")
times = sorted(float(t) * 1000 for _, t in rows)
print(f"{ok}/{n} ok  first {times[0]:.0f} ms  median {times[len(times)//2]:.0f} ms  "
      f"slowest {times[-1]:.0f} ms  slowest - first {times[-1] - times[0]:.1f} ms  "
      f"(slowest served <= {times[-1] - delay:.1f} ms after the origin answered)")
