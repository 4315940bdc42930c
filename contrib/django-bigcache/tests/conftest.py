"""Fixtures that start the real bigcache binary and the example Django site
(under gunicorn) on free loopback ports, and stop them afterwards."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import django
import pytest
from django.conf import settings

HERE = Path(__file__).resolve().parent
PKG = HERE.parent
REPO = PKG.parent.parent
SITE = PKG / "example_site"
BIGCACHE_BIN = os.environ.get("BIGCACHE_BIN", str(REPO / "target" / "debug" / "bigcache"))

if not settings.configured:
    # The backend tests build backends directly; the site runs in its own
    # process with its own settings.
    # (auth for the anonymous user an ESI shell is rendered as.)
    settings.configure(CACHES={}, INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
                       USE_TZ=True, SECRET_KEY="connector-tests-only")
    django.setup()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bigcache:
    """One bigcache node. ``kill`` and ``start`` again keep its data
    directory and its ports, as a node that crashed and came back."""

    def __init__(self, upstream="http://127.0.0.1:9", extra=(), copy_of=None, proxy_listen=None):
        """``copy_of``: another (stopped) node whose data directory this one
        starts with, as a new node cloned from an old one."""
        if not Path(BIGCACHE_BIN).exists():
            raise RuntimeError(f"{BIGCACHE_BIN} missing: run `cargo build` first (or set BIGCACHE_BIN)")
        self.dir = tempfile.TemporaryDirectory()
        if copy_of is not None:
            shutil.copytree(copy_of.data, os.path.join(self.dir.name, "data"), symlinks=True)
        self.upstream, self.extra = upstream, list(extra)
        self.access_log = os.path.join(self.dir.name, "access.log")
        self.api = self.proxy = None
        # ``unix:/path`` for a Unix socket; else a loopback port.
        self.proxy_listen = proxy_listen
        self.start()

    def start(self):
        api = self.api.split("//")[1] if self.api else "127.0.0.1:0"
        if self.proxy_listen:
            proxy = self.proxy_listen
        else:
            proxy = self.proxy.split("//")[1] if self.proxy else "127.0.0.1:0"
        self.proc = subprocess.Popen(
            [BIGCACHE_BIN, "--data-dir", self.data, "--api-listen", api,
             "--proxy-listen", proxy, "--upstream", self.upstream, "--log", "warn",
             "--access-log", self.access_log, *self.extra],
            stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("bigcache listening api="):
            raise RuntimeError(f"bigcache did not start: {line!r}")
        api, proxy = line.split("api=")[1].strip().split(" proxy=")
        self.api, self.proxy = api, proxy
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.api + "/readyz", timeout=2)
                break
            except OSError:  # 503 until the store is open
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def data(self):
        return os.path.join(self.dir.name, "data")

    def terminate(self):
        """A clean stop (SIGTERM), keeping the data directory."""
        self.proc.terminate()
        self.proc.wait(timeout=15)

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=15)

    def stat(self):
        with urllib.request.urlopen(self.api + "/stat", timeout=5) as r:
            return json.load(r)

    def count(self):
        with urllib.request.urlopen(self.api + "/stat/count", timeout=30) as r:
            return json.load(r)["count"]

    def logged_paths(self):
        """The paths this node's proxy was asked for, from its access log."""
        time.sleep(0.1)  # lines reach the file within 20 ms
        with open(self.access_log) as f:
            return [line.split('"')[1].split(" ")[1] for line in f if '"' in line]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.dir.cleanup()


@pytest.fixture(scope="session")
def bigcache():
    b = Bigcache()
    yield b
    b.stop()


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


class Site:
    """The example Django site under gunicorn, with ``nodes`` bigcache nodes
    whose upstream it is (the first one's proxy is ``self.proxy``)."""

    def __init__(self, nodes=1, bigcache_args=(), slow_seconds=1.5, datasets=30, proxy_listen=None):
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory()
        self.env = dict(os.environ)
        self.env.update({
            "DJANGO_SETTINGS_MODULE": "example_site.settings",
            "EXAMPLE_DB": os.path.join(self.tmp.name, "db.sqlite3"),
            "EXAMPLE_SLOW_SECONDS": str(slow_seconds),
            "PYTHONPATH": str(SITE),
        })
        self.caches = [
            Bigcache(upstream=f"http://127.0.0.1:{self.port}", extra=bigcache_args,
                     proxy_listen=proxy_listen if i == 0 else None)
            for i in range(nodes)
        ]
        self.cache = self.caches[0]
        self.env["BIGCACHE_URL"] = ",".join(c.api for c in self.caches)
        self.manage("migrate", "-v", "0")
        self.manage("seed", str(datasets))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "example_site.wsgi:application",
             "-b", f"127.0.0.1:{self.port}", "-w", "2", "--threads", "4",
             "--chdir", str(SITE), "--log-level", "warning"],
            env=self.env,
        )
        self.django = f"http://127.0.0.1:{self.port}"
        wait_http(self.django + "/_renders/")
        self.proxy = self.cache.proxy

    def manage(self, *args, check=True):
        return subprocess.run([sys.executable, str(SITE / "manage.py"), *args], env=self.env,
                              check=check, cwd=SITE, capture_output=not check, text=True)

    def renders(self, path):
        with urllib.request.urlopen(f"{self.django}/_renders/?path={urllib.parse.quote(path)}") as r:
            return json.load(r)["n"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
        for c in self.caches:
            c.stop()
        self.tmp.cleanup()


@pytest.fixture(scope="session")
def site():
    s = Site()
    yield s
    s.stop()
