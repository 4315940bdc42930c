"""The system checks (``manage.py check``) and the package without its
``async`` extra."""

import os
import subprocess
import sys

from django.core import checks
from django.test import override_settings

import django_bigcache.checks  # noqa: F401  (registers the checks)

from conftest import PKG, SITE

LOCAL = {"BACKEND": "django_bigcache.backend.BigCacheBackend", "LOCATION": "http://127.0.0.1:36379"}


def ids(deploy=False):
    found = checks.run_checks(include_deployment_checks=deploy)
    return sorted(m.id for m in found if m.id and m.id.startswith("django_bigcache."))


@override_settings(CACHES={"default": LOCAL}, BIGCACHE={"LOCATION": "http://127.0.0.1:36379"})
def test_a_local_node_passes():
    assert ids() == []
    assert ids(deploy=True) == []


def test_an_unusable_location_is_an_error_with_a_hint():
    for location in ["ftp://127.0.0.1:36379", "127.0.0.1:36379", "http://127.0.0.1:36379/api/v1", "http://"]:
        with override_settings(CACHES={"default": {**LOCAL, "LOCATION": location}}):
            found = [m for m in checks.run_checks() if m.id == "django_bigcache.E001"]
            assert found, location
            assert found[0].hint and found[0].level == checks.ERROR
    # The original connector's form (".../cache/") names the same root.
    with override_settings(CACHES={"default": {**LOCAL, "LOCATION": "http://127.0.0.1:36379/cache/"}}):
        assert ids() == []


def test_a_node_on_another_host_needs_a_token(monkeypatch):
    monkeypatch.delenv("BIGCACHE_API_TOKEN", raising=False)
    remote = {**LOCAL, "LOCATION": ["http://127.0.0.1:36379", "http://10.0.0.5:36379"]}
    with override_settings(CACHES={"default": remote}):
        assert ids() == ["django_bigcache.E002"]
    with override_settings(CACHES={"default": {**remote, "OPTIONS": {"TOKEN": "s3cret"}}},
                           BIGCACHE={"LOCATION": remote["LOCATION"], "TOKEN": "s3cret"}):
        assert ids() == []
        # Over plain http to another host the token travels in clear.
        assert ids(deploy=True) == ["django_bigcache.W101", "django_bigcache.W101"]
    with override_settings(BIGCACHE={"LOCATION": "http://cache.internal:36379"}, CACHES={}):
        assert ids() == ["django_bigcache.E002"]
    monkeypatch.setenv("BIGCACHE_API_TOKEN", "from-env")
    with override_settings(CACHES={"default": remote}):
        assert ids() == []


@override_settings(CACHES={"default": LOCAL}, BIGCACHE={"LOCATION": "http://127.0.0.1:36379"},
                   MIDDLEWARE=["django.middleware.gzip.GZipMiddleware"])
def test_gzip_middleware_behind_bigcache_is_a_warning():
    assert ids() == ["django_bigcache.W001"]


def test_site_wide_rules_that_cannot_work_are_errors():
    for pages in [[(r"^/(", "1h")], [(r"^/x/", 1.5)], [r"^/x/"], [(r"^/x/", "1h", "extra")],
                  {r"^/a/": "1h", r"^/b/": "2h"}, [(r"^/x/", "1 hour")], [(r"^/x/", 0)]]:
        with override_settings(CACHES={}, BIGCACHE={"LOCATION": "http://127.0.0.1:36379", "PAGES": pages}):
            assert ids() == ["django_bigcache.E003"], pages
    with override_settings(CACHES={}, BIGCACHE={"PAGES": [(r"^/x/", "1h"), (r"^/y/", None), (r"^/z/", 60),
                                                           (r"^/w/", "1h 30m"), (r"^/v/", "28ds")]}):
        assert ids() == []


@override_settings(CACHES={"default": LOCAL})
def test_deploy_asks_for_the_purge_nodes():
    assert ids() == []
    assert ids(deploy=True) == ["django_bigcache.W102"]


def test_the_example_site_registers_its_checks():
    """``manage.py check`` through the AppConfig, as a site runs it: clean
    as shipped, and a bad node named through the environment is reported
    with its id."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_site.settings"}
    ok = subprocess.run([sys.executable, "manage.py", "check"], cwd=SITE, env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "no issues" in ok.stdout
    bad = subprocess.run([sys.executable, "manage.py", "check"], cwd=SITE,
                         env={**env, "BIGCACHE_URL": "http://10.9.8.7:36379"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "django_bigcache.E002" in bad.stderr, bad.stderr


NO_AIOHTTP = r"""
import asyncio, sys
sys.modules["aiohttp"] = None  # as if the [async] extra were not installed
sys.modules["yarl"] = None
import django
from django.conf import settings
settings.configure(CACHES={"default": {"BACKEND": "django_bigcache.backend.BigCacheBackend",
                                       "LOCATION": sys.argv[1]}},
                   INSTALLED_APPS=["django_bigcache"], SECRET_KEY="x")
django.setup()
from django.core.cache import cache
from django.core import checks
cache.set("no-aiohttp", {"ok": 1}, 60)
assert cache.get("no-aiohttp") == {"ok": 1}
assert [m.id for m in checks.run_checks()] == ["django_bigcache.W002"]
try:
    asyncio.run(cache.aget("no-aiohttp"))
except ImportError as e:
    print("async:", e)
else:
    raise SystemExit("aget worked without aiohttp")
"""


def test_the_sync_backend_needs_no_aiohttp(bigcache):
    out = subprocess.run([sys.executable, "-c", NO_AIOHTTP, bigcache.api], cwd=PKG,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'django-bigcache[async]'" in out.stdout


def test_the_purge_helpers_follow_override_settings(monkeypatch):
    """The purge helpers' nodes come from ``settings.BIGCACHE`` when they
    are called, not from the first call's settings."""
    from django_bigcache.client import default_client

    monkeypatch.delenv("BIGCACHE_URL", raising=False)
    with override_settings(BIGCACHE={"LOCATION": "http://127.0.0.1:1111"}):
        assert [c.base for c in default_client().clients] == ["http://127.0.0.1:1111"]
        assert default_client() is default_client(), "one pool per configuration"
    with override_settings(BIGCACHE={"LOCATION": ["http://127.0.0.1:2222", "http://127.0.0.1:3333"]}):
        assert [c.base for c in default_client().clients] == ["http://127.0.0.1:2222", "http://127.0.0.1:3333"]
