#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: installs what the tests
# need, then runs them. Used by .ci/run and quoted in the README.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
# Real nginx for the tests of the configs in nginx/ (and openssl for their
# throwaway certificate).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v openssl >/dev/null || need_apt+=(openssl)
# Prometheus and promtool scrape /metrics and run the Grafana dashboard's
# queries (contrib/django-bigcache/tests/test_prometheus.py).
command -v prometheus >/dev/null || need_apt+=(prometheus)
# systemd-analyze checks the shipped unit file (tests/config.rs).
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    fi
fi

cargo test --locked --all-targets

# The Django connector: its own venv, Django's cache contract against the
# real binary, and the example site under gunicorn behind the real proxy.
cargo build --locked --quiet
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet "./contrib/django-bigcache[test]"
(cd contrib/django-bigcache && BIGCACHE_BIN="$PWD/../../target/debug/bigcache" ../../.venv/bin/python -m pytest -q -p no:cacheprovider)

# Django's cache contract, the backend and the system checks on the oldest
# supported LTS too (the run above has the newest Django).
[ -x .venv-django42/bin/python ] || python3 -m venv .venv-django42
.venv-django42/bin/pip install --quiet --upgrade pip
.venv-django42/bin/pip install --quiet "Django>=4.2,<4.3" "./contrib/django-bigcache[test]"
(cd contrib/django-bigcache && BIGCACHE_BIN="$PWD/../../target/debug/bigcache" ../../.venv-django42/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_django_contract.py tests/test_backend.py tests/test_checks.py)

# The crate as it would be published: its manifest and file list
# (`cargo package`), then its packaged sources built on their own, sharing
# this tree's compiled dependencies (last: it rebuilds target/debug/bigcache
# from the packaged copy of the same sources).
cargo package --locked --no-verify --allow-dirty --quiet
crate=$(ls -t target/package/bigcache-*.crate | head -1)
rm -rf target/package-check && mkdir -p target/package-check
tar -xzf "$crate" -C target/package-check
(cd target/package-check/bigcache-* && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --locked --offline --quiet)
echo "packaged: $crate builds on its own"
