"""Django's own cache test suite (``BaseCacheTests`` from the source
distribution of the installed Django, fetched from the package index, not
vendored) against BigCacheBackend and a real bigcache."""

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import django

from conftest import HERE, REPO

SRC_CACHE = REPO / ".venv" / "django-src"


def django_tests_dir():
    """``tests/`` of Django's sdist for the installed version, holding only
    the ``cache`` package; downloaded once into the venv."""
    version = django.get_version()
    root = SRC_CACHE / version
    if not (root / "tests" / "cache" / "tests.py").exists():
        SRC_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
                        f"django=={version}", "-d", str(SRC_CACHE)], check=True)
        sdist = next(SRC_CACHE.glob(f"[dD]jango-{version}.tar.gz"))
        prefix = f"{sdist.name[: -len('.tar.gz')]}/tests/cache/"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
            for m in members:
                m.name = "tests/cache/" + m.name[len(prefix):]
            tar.extractall(root, members=members, filter="data")
    return root / "tests"


def test_djangos_base_cache_tests_pass(bigcache, capsys):
    r = subprocess.run([sys.executable, str(HERE / "django_contract.py"), str(django_tests_dir()), bigcache.api],
                       capture_output=True, text=True, timeout=600, cwd=HERE)
    out = r.stdout + r.stderr
    m = re.search(r"CONTRACT run=(\d+) failures=(\d+) errors=(\d+) skipped=(\d+)", out)
    assert m, out[-3000:]
    run, failures, errors, skipped = map(int, m.groups())
    with capsys.disabled():
        print(f"\n  Django {django.get_version()} BaseCacheTests: {run} run, {run - failures - errors - skipped} passed, "
              f"{skipped} skipped (named), {failures} failed, {errors} errors")
    assert failures == 0 and errors == 0, out[-6000:]
    assert run >= 50, "Django's suite shrank: check the download"
    assert sorted(re.findall(r"^SKIP (\w+):", out, flags=re.M)) == ["test_cull", "test_cull_delete_when_store_empty", "test_zero_cull"]
