#!/usr/bin/env python3
"""The esi scenario's Django half: the example site (contrib/django-bigcache)
under gunicorn, bigcache ($BIGCACHE_BIN) in front. A logged-in visitor's
dataset page two ways, N pages each, interleaved:

- ESI: /esi/dataset/<pk>/, the shell cached (warmed by an anonymous
  visit), the user menu and the "saved" star per-user fragments, the CSRF
  field a fragment, the footer a shared one;
- bypass: /dataset/<pk>/, the full render a session gets today.

Reports the time to the full page (client side, median and p90) and the
Django CPU per page (user + system ticks of gunicorn's workers over the
run, divided by the pages). The render's EXAMPLE_SLOW_SECONDS sleep stands
for the site's 1.5 s of database work: it costs time, not CPU."""
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "contrib" / "django-bigcache" / "example_site"
PAGES = int(os.environ.get("ESI_PAGES", "20"))
SLOW = os.environ.get("ESI_SLOW_SECONDS", "1.5")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(port, path="/"):
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing on port {port}")


def get(port, path, cookie=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def ticks(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main():
    tmp = tempfile.TemporaryDirectory()
    dport, api, proxy = free_port(), free_port(), free_port()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="example_site.settings",
               EXAMPLE_DB=os.path.join(tmp.name, "db.sqlite3"), EXAMPLE_SLOW_SECONDS=SLOW,
               PYTHONPATH=str(SITE), BIGCACHE_URL=f"http://127.0.0.1:{api}")
    manage = [sys.executable, str(SITE / "manage.py")]
    procs = [subprocess.Popen([os.environ["BIGCACHE_BIN"], "--data-dir", os.path.join(tmp.name, "data"),
                               "--api-listen", f"127.0.0.1:{api}", "--proxy-listen", f"127.0.0.1:{proxy}",
                               "--upstream", f"http://127.0.0.1:{dport}", "--log", "warn"],
                              stdout=subprocess.DEVNULL)]
    try:
        wait(api, "/healthz")
        subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=SITE)
        subprocess.run([*manage, "seed", "30"], env=env, check=True, cwd=SITE)
        procs.insert(0, subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "example_site.wsgi:application", "-b", f"127.0.0.1:{dport}",
             "-w", "2", "--threads", "4", "--chdir", str(SITE), "--log-level", "warning"], env=env))
        wait(dport, "/_renders/")
        r, _ = get(dport, "/test-login/alice7/")
        cookie = next(c.split(";")[0] for c in r.msg.get_all("Set-Cookie") if c.startswith("sessionid="))
        workers = children(procs[0].pid)
        times = {"esi": [], "bypass": []}
        cpu = {"esi": 0, "bypass": 0}
        for i in range(PAGES):
            pk = i % 30 + 1
            get(proxy, f"/esi/dataset/{pk}/")  # the anonymous visit that stores the shell
            for kind, path in (("esi", f"/esi/dataset/{pk}/"), ("bypass", f"/dataset/{pk}/")):
                t0, c0 = time.perf_counter(), ticks(workers)
                r, body = get(proxy, path, cookie)
                times[kind].append(time.perf_counter() - t0)
                cpu[kind] += ticks(workers) - c0
                assert r.status == 200, (path, r.status)
                if kind == "esi":
                    assert b"Signed in as alice7" in body and b"<esi:" not in body, body[:300]
                    assert r.getheader("X-Cache", "").startswith("HIT"), r.getheaders()
        hz = os.sysconf("SC_CLK_TCK")
        print(f"  Django example site under gunicorn, a logged-in visitor, {PAGES} dataset pages each"
              f" (render sleeps {SLOW} s for the site's database work)")
        print(f"  {'':18} {'median ms':>10} {'p90 ms':>8} {'Django CPU ms/page':>19}")
        for kind, label in (("esi", "ESI, shell cached"), ("bypass", "bypass (today)")):
            t = sorted(times[kind])
            p90 = t[int(len(t) * 0.9) - 1]
            print(f"  {label:18} {statistics.median(t) * 1000:10.1f} {p90 * 1000:8.1f}"
                  f" {cpu[kind] * 1000 / hz / PAGES:19.1f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=15)
        tmp.cleanup()


if __name__ == "__main__":
    main()
