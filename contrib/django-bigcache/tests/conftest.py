"""Fixtures that start the real bigcache binary and the example Django site
(under gunicorn) on free loopback ports, and stop them afterwards."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
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
    settings.configure(CACHES={}, INSTALLED_APPS=[], USE_TZ=True)
    django.setup()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bigcache:
    def __init__(self, upstream="http://127.0.0.1:9", extra=()):
        if not Path(BIGCACHE_BIN).exists():
            raise RuntimeError(f"{BIGCACHE_BIN} missing: run `cargo build` first (or set BIGCACHE_BIN)")
        self.dir = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [BIGCACHE_BIN, "--data-dir", self.dir.name, "--api-listen", "127.0.0.1:0",
             "--proxy-listen", "127.0.0.1:0", "--upstream", upstream, "--log", "warn", *extra],
            stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("bigcache listening api="):
            raise RuntimeError(f"bigcache did not start: {line!r}")
        api, proxy = line.split("api=")[1].strip().split(" proxy=")
        self.api, self.proxy = api, proxy

    def stop(self):
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
    """The example Django site under gunicorn, with bigcache in front."""

    def __init__(self):
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory()
        self.env = dict(os.environ)
        self.env.update({
            "DJANGO_SETTINGS_MODULE": "example_site.settings",
            "EXAMPLE_DB": os.path.join(self.tmp.name, "db.sqlite3"),
            "EXAMPLE_SLOW_SECONDS": "1.5",
            "PYTHONPATH": str(SITE),
        })
        self.cache = Bigcache(upstream=f"http://127.0.0.1:{self.port}")
        self.env["BIGCACHE_URL"] = self.cache.api
        self.manage("migrate", "--run-syncdb", "-v", "0")
        self.manage("seed", "30")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "example_site.wsgi:application",
             "-b", f"127.0.0.1:{self.port}", "-w", "2", "--threads", "4",
             "--chdir", str(SITE), "--log-level", "warning"],
            env=self.env,
        )
        self.django = f"http://127.0.0.1:{self.port}"
        wait_http(self.django + "/_renders/")
        self.proxy = self.cache.proxy

    def manage(self, *args):
        subprocess.run([sys.executable, str(SITE / "manage.py"), *args], env=self.env,
                       check=True, cwd=SITE)

    def renders(self, path):
        with urllib.request.urlopen(f"{self.django}/_renders/?path={urllib.parse.quote(path)}") as r:
            return json.load(r)["n"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.cache.stop()
        self.tmp.cleanup()


@pytest.fixture(scope="session")
def site():
    s = Site()
    yield s
    s.stop()
