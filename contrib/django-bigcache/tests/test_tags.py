"""Tagging responses from views, and tag purges from Python and the shell,
against a real bigcache."""

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from conftest import Bigcache
from django_bigcache import add_tags, bigcache_page, purge, purge_tags
from django_bigcache.client import Nodes
from django_bigcache.tags import check_tag


def test_add_tags_merges_and_refuses_what_bigcache_would():
    r = add_tags(HttpResponse("x"), "dataset-1", "list")
    add_tags(r, "list", "feed")
    assert r["Surrogate-Key"] == "dataset-1 list feed"
    for bad in ["", "a b", "a,b", "caf\u00e9", "x" * 257, 7]:
        with pytest.raises(ValueError):
            check_tag(bad)
    with pytest.raises(ValueError):
        add_tags(HttpResponse("x"), *(f"t{i}" for i in range(129)))
    assert "Surrogate-Key" not in add_tags(HttpResponse("x"))


def test_the_decorator_tags_from_a_list_or_from_the_views_arguments():
    rf = RequestFactory()

    @bigcache_page("1h", tags=lambda request, pk: [f"dataset-{pk}", "detail"])
    def detail(request, pk):
        return HttpResponse("d")

    @bigcache_page("1h", tags=["home"])
    def home(request):
        return HttpResponse("h")

    r = detail(rf.get("/dataset/3/"), pk=3)
    assert (r["X-Bigcache-TTL"], r["Surrogate-Key"]) == ("1h", "dataset-3 detail")
    assert home(rf.get("/"))["Surrogate-Key"] == "home"
    # Not a cacheable answer: neither lifetime nor tags.
    assert "Surrogate-Key" not in detail(rf.post("/dataset/3/"), pk=3)


def test_purge_tags_reaches_every_node_hard_or_soft():
    a, b = Bigcache(), Bigcache()
    try:
        nodes = Nodes.from_location([a.api, b.api])
        assert purge_tags("dataset-1", client=nodes) == 0
        assert purge_tags("dataset-1", soft=True, warm=True, client=nodes) == 0
        result = purge(tags=["x"] * 1001, soft=True, client=nodes)
        assert result.complete and result.count == 0, "split into calls the server takes"
        with pytest.raises(ValueError):
            purge_tags("a b", client=nodes)
        with pytest.raises(ValueError):
            purge_tags("x", warm=True, client=nodes)
        b.kill()
        assert purge_tags("dataset-1", client=nodes) == 0
        assert purge(tags=["dataset-1"], client=nodes).failed == [b.api]
    finally:
        a.stop()
        b.stop()


def test_a_purge_says_which_node_refused_it_and_which_could_not_rewarm():
    """A node behind a trusted front without --site-url purges but cannot
    re-warm: reported as such, not as unreachable. A node that answers 4xx
    refused the purge: reported with what it said."""
    plain, fronted = Bigcache(), Bigcache(extra=["--trusted-proxy", "127.0.0.1/32"])
    try:
        nodes = Nodes.from_location([plain.api, fronted.api])
        result = purge(tags=["dataset-1"], soft=True, warm=True, client=nodes)
        assert result.failed == [] and result.refused == []
        assert [node for node, _ in result.not_warmed] == [fronted.api]
        assert "--site-url" in result.not_warmed[0][1]
        # An item the server refuses (an empty prefix): answered, not unreachable.
        result = purge(prefixes=[""], client=nodes)
        assert result.failed == []
        assert [node for node, _ in result.refused] == [plain.api, fronted.api]
        assert not result.complete
    finally:
        plain.stop()
        fronted.stop()
