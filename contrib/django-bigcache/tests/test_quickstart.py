"""The example site's quick start (this package's README, "The example
site"), run command by command as a newcomer types them: migrate, seed,
gunicorn on :8000, bigcache on :8080 in front, a MISS then a HIT, and
`bigcache warm` over the site's sitemap. Only what a test must change is
substituted, each substitution checked to find its text: the venv is this
test run's own (the install line is checked, not run), the binary is the
one under test with a throwaway data directory, and the database is a
temporary file."""

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from conftest import BIGCACHE_BIN, PKG, REPO

VENV = "../../../.venv/bin/"


def quickstart_commands():
    text = (PKG / "README.md").read_text()
    section = text[text.index("## The example site"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def substitute(line, old, new):
    assert old in line, f"the README's quick start changed: {old!r} not in {line!r}"
    return line.replace(old, new)


def wait_for(url, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_the_example_sites_quick_start_works_as_written(tmp_path):
    lines = quickstart_commands()
    assert lines[0].startswith("python3 -m venv .venv") and "./contrib/django-bigcache" in lines[0]
    env = {**os.environ, "EXAMPLE_DB": str(tmp_path / "db.sqlite3"), "EXAMPLE_SLOW_SECONDS": "0.3",
           "BIGCACHE_URL": "http://127.0.0.1:36379"}
    python = sys.executable
    cwd = REPO
    background = []
    outputs = []
    try:
        for line in lines[1:]:
            command = line.split("  #")[0].strip()
            if command.startswith("cd "):
                target = command[3:].split("&&")[0].strip()
                cwd = (cwd / target).resolve()
                rest = command.split("&&", 1)[1].strip() if "&&" in command else ""
                if not rest:
                    continue
                cwd = REPO  # `cd ../../.. && ...` returns to the root
                command = rest
            if f"{VENV}python" in command:
                command = substitute(command, f"{VENV}python", shlex.quote(python))
            if f"{VENV}gunicorn" in command:
                command = substitute(command, f"{VENV}gunicorn", f"{shlex.quote(python)} -m gunicorn")
            assert VENV not in command, command
            if command.startswith("cargo run --release"):
                command = substitute(command, "cargo run --release",
                                     f"{BIGCACHE_BIN} --data-dir {tmp_path / 'data'}")
            if command.startswith("target/release/bigcache"):
                command = substitute(command, "target/release/bigcache", BIGCACHE_BIN)
            if command.endswith("&"):
                proc = subprocess.Popen(command[:-1], shell=True, cwd=cwd, env=env, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                background.append(proc)
                if "gunicorn" in command:
                    wait_for("http://127.0.0.1:8000/datasets/")
                else:
                    wait_for("http://127.0.0.1:36379/readyz")
                continue
            done = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            outputs.append((line, done.stdout + done.stderr))
        said = {line: out for line, out in outputs}
        curls = [out for line, out in outputs if line.startswith("curl")]
        assert "MISS" in curls[0] and "HIT" in curls[1], curls
        warm = next(out for line, out in outputs if "warm" in line)
        assert re.search(r"\b20\b", warm), warm
        # Warmed: another dataset's page is a hit at once.
        r = urllib.request.urlopen("http://127.0.0.1:8080/dataset/7/", timeout=10)
        assert r.headers["X-Cache"] == "HIT"
        assert said
    finally:
        for proc in background:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
