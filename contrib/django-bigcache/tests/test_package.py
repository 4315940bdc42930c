"""The package as it would be published: sdist and wheel built from this
tree, their metadata checked by twine, and the wheel holding every module
(packages are found, not listed by hand)."""

import subprocess
import sys
import zipfile

from conftest import PKG


def test_sdist_and_wheel_build_and_pass_twine_check(tmp_path):
    # --no-isolation: the build tools come from the test extra, not from a
    # download per run.
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                    "--outdir", str(tmp_path), str(PKG)], check=True, capture_output=True, timeout=300)
    built = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.endswith(".whl") for n in built) and any(n.endswith(".tar.gz") for n in built), built
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                            *[str(p) for p in tmp_path.iterdir()]],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    wheel = next(tmp_path.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for module in ["backend.py", "apps.py", "checks.py", "decorators.py", "purge.py",
                   "management/commands/bigcache_purge.py"]:
        assert f"django_bigcache/{module}" in names, module
    assert not any(n.startswith(("tests/", "example_site/")) for n in names)
    assert "Classifier: Framework :: Django :: 5.2" in meta
    assert "Provides-Extra: async" in meta
    # aiohttp only with the extra.
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist: aiohttp")]
    assert requires and all("extra ==" in r for r in requires), requires
