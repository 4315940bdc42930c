"""Several bigcache nodes: values placed by consistent hashing, a down node
a miss for its own keys only, purges on every node. Real servers."""

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Bigcache
from django_bigcache import purge, purge_path, purge_prefix
from django_bigcache.backend import BigCacheBackend
from django_bigcache.client import Client, Nodes, Ring, split_locations
from django_bigcache.purge import node_failures


def test_locations_are_read_as_django_reads_memcached_servers():
    assert split_locations("http://a:1, http://b:2;http://c:3") == ["http://a:1", "http://b:2", "http://c:3"]
    assert split_locations(["http://a:1", "http://b:2"]) == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError, match="twice"):
        split_locations("http://a:1,http://a:1/")
    with pytest.raises(ValueError, match="no node"):
        split_locations(" , ")


def test_the_ring_spreads_keys_and_a_new_node_moves_about_a_quarter():
    three = [Client(f"http://10.0.0.{i}:36379") for i in (1, 2, 3)]
    four = three + [Client("http://10.0.0.4:36379")]
    keys = [f"site:1:key-{i}" for i in range(20000)]
    ring3, ring4, reordered = Ring(three), Ring(four), Ring(list(reversed(three)))
    before = {k: ring3.node(k).base for k in keys}
    share = {c.base: sum(1 for v in before.values() if v == c.base) / len(keys) for c in three}
    assert all(0.25 < s < 0.42 for s in share.values()), share
    after = {k: ring4.node(k).base for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert 0.17 < len(moved) / len(keys) < 0.33, len(moved) / len(keys)
    assert all(after[k] == "http://10.0.0.4:36379" for k in moved), "a key moved between two old nodes"
    # Every process computes the same placement, whatever order it lists the nodes in.
    assert all(reordered.node(k).base == before[k] for k in keys)


@pytest.fixture
def three():
    nodes = [Bigcache() for _ in range(3)]
    yield nodes
    for n in nodes:
        n.stop()


def test_values_live_on_one_node_and_a_down_node_is_a_miss(three, caplog):
    cache = BigCacheBackend([n.api for n in three], {"TIMEOUT": 300})
    keys = [f"k{i}" for i in range(90)]
    for k in keys:
        cache.set(k, k.upper())
    counts = [n.count() for n in three]
    assert sum(counts) == len(keys) and all(c > 10 for c in counts), counts
    assert all(cache.get(k) == k.upper() for k in keys)
    home = {k: cache._nodes.for_key(cache.make_key(k)).base for k in keys}

    three[2].kill()
    with caplog.at_level(logging.WARNING, logger="django_bigcache"):
        for k in keys:
            expected = None if home[k] == three[2].api else k.upper()
            assert cache.get(k) == expected
        cache.set("after", 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="django_bigcache"):
        cache.clear()
    assert [r.getMessage() for r in caplog.records if three[2].api in r.getMessage()], "clear() hid the down node"
    assert three[0].count() == three[1].count() == 0, "clear() skipped a live node"


def test_dot_keys_stay_on_their_route(bigcache):
    cache = BigCacheBackend(bigcache.api, {"TIMEOUT": 300})
    for k in (".", "..", "../stat", "a/../b"):
        cache.set(k, k)
    assert [cache.get(k) for k in (".", "..", "../stat", "a/../b")] == [".", "..", "../stat", "a/../b"]
    assert cache.get("b") is None


class NotBigcache(BaseHTTPRequestHandler):
    """Something else answering at a node's address: 200 and an HTML page."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_answer_that_is_not_bigcaches_is_a_failed_node_not_an_exception(bigcache):
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotBigcache)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        other = f"http://127.0.0.1:{server.server_address[1]}"
        nodes = Nodes.from_location([bigcache.api, other])
        result = purge(prefixes=["/nothing-here/"], client=nodes)
        assert result.failed == [other] and result.count == 0
        # bigcache's own refusal (an empty prefix is a 400) is no "0 purged": it is
        # a refusal, with what the node said, and the purge is not complete.
        refused = purge(prefixes=[""], client=Nodes.from_location(bigcache.api))
        assert refused.failed == [] and [n for n, _ in refused.refused] == [bigcache.api]
        assert not refused.complete
    finally:
        server.shutdown()


def test_purges_go_to_every_node_and_name_the_ones_down(three, caplog):
    nodes = Nodes.from_location(",".join(n.api for n in three))
    # The same page on two nodes (a stand-in's copy), as raw values here.
    for n in three[:2]:
        Client(n.api).request("POST", Client(n.api).url("pickle", "/dataset/1/"), body=b"x")
        Client(n.api).request("POST", Client(n.api).url("pickle", "/datasets/?page=2"), body=b"x")
    assert purge_path("/dataset/1/", client=nodes) is True
    assert [n.count() for n in three] == [1, 1, 0]
    assert purge_path("/dataset/1/", client=nodes) is False

    three[1].kill()
    failures = node_failures[three[1].api]
    with caplog.at_level(logging.WARNING, logger="django_bigcache"):
        result = purge(paths=["/x/"], prefixes=["/datasets/"], client=nodes)
    assert result.count == 1 and result.failed == [three[1].api] and not result.complete
    assert node_failures[three[1].api] == failures + 1
    assert any(three[1].api in r.getMessage() for r in caplog.records)
    assert purge_prefix("/datasets/", client=nodes) == 0

    for n in three:
        n.kill()
    assert purge_prefix("/datasets/", client=nodes) is None
    assert purge_path("/dataset/1/", client=nodes) is False


def test_a_node_cloned_from_another_starts_with_its_entries():
    """Growing from one node to several without a cold start (README,
    Scaling out): copy the stopped node's data directory to the new ones."""
    old = Bigcache()
    clones = []
    try:
        cache = BigCacheBackend(old.api, {"TIMEOUT": 300})
        for i in range(200):
            cache.set(f"k{i}", i)
        old.terminate()
        clones = [Bigcache(copy_of=old) for _ in range(2)]
        for clone in clones:
            assert clone.count() == 200
            c = BigCacheBackend(clone.api, {"TIMEOUT": 300})
            assert [c.get(f"k{i}") for i in range(200)] == list(range(200))
        # The clones are independent: a write to one is not in the other.
        BigCacheBackend(clones[0].api, {"TIMEOUT": 300}).set("new", 1)
        assert BigCacheBackend(clones[1].api, {"TIMEOUT": 300}).get("new") is None
    finally:
        for n in [old, *clones]:
            n.stop()
