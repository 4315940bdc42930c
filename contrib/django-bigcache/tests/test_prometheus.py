"""``/metrics`` as Prometheus itself reads it: ``promtool check metrics``
on a scrape, a real Prometheus server scraping a running bigcache on
loopback, and every PromQL expression of the shipped Grafana dashboard
(``contrib/grafana/bigcache.json``) evaluated against what it scraped,
each returning data after some traffic."""

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import REPO, Site, free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(not (PROMETHEUS and PROMTOOL),
                                reason="Prometheus is not installed (bash .ci/test.sh installs it)")


@pytest.fixture(scope="module")
def site():
    """A site of its own: the pages this traffic caches are then nobody
    else's first request."""
    s = Site(slow_seconds=0.1)
    yield s
    s.stop()


def dashboard_queries():
    board = json.loads((REPO / "contrib" / "grafana" / "bigcache.json").read_text())

    def panels(p):
        for x in p.get("panels", []):
            yield x
            yield from panels(x)

    return [(p.get("title"), t["expr"]) for p in panels(board) for t in p.get("targets", []) if t.get("expr")]


def traffic(site):
    for path in ["/dataset/1/", "/dataset/1/", "/dataset/2/", "/datasets/?page=1", "/datasets/?page=1", "/_seen/"]:
        urllib.request.urlopen(site.proxy + path, timeout=30).read()
    req = urllib.request.Request(site.proxy + "/about/", headers={"Authorization": "Basic eDp5"})
    urllib.request.urlopen(req, timeout=30).read()


def test_promtool_accepts_a_scrape(site):
    traffic(site)
    body = urllib.request.urlopen(site.cache.api + "/metrics", timeout=10).read()
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()


def test_prometheus_scrapes_bigcache_and_every_dashboard_query_returns_data(site, tmp_path):
    api = urllib.parse.urlsplit(site.cache.api)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: bigcache
    static_configs:
      - targets: ["{api.hostname}:{api.port}"]
""")
    check = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"

    def query(expr):
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        answer = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    try:
        deadline = time.time() + 60
        while True:
            try:
                if any(r["value"][1] == "1" for r in query('up{job="bigcache"}')):
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "Prometheus never scraped bigcache"
            time.sleep(0.5)
        # Traffic between scrapes, so every rate has two samples that differ.
        for _ in range(4):
            traffic(site)
            time.sleep(1.2)
        queries = dashboard_queries()
        assert len(queries) >= 10, queries
        empty = [(title, expr) for title, expr in queries if not query(expr)]
        assert not empty, f"dashboard queries that returned no data: {empty}"
        # The hit ratio panel agrees with what the traffic was: some hits.
        ratio = query(dict(queries)["Hit ratio (proxy)"])
        assert 0 < float(ratio[0]["value"][1]) < 1, ratio
    finally:
        proc.terminate()
        proc.wait(timeout=30)
