"""Django's cache contract, run against BigCacheBackend and a real bigcache."""

import socket
import time

import pytest
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.http import HttpResponse

from django_bigcache import BigCache
from django_bigcache.backend import BigCacheBackend


def backend(location, **params):
    params.setdefault("TIMEOUT", 300)
    return BigCacheBackend(location, params)


@pytest.fixture
def cache(bigcache, request):
    # A key prefix per test keeps tests independent on one server.
    c = backend(bigcache.api, KEY_PREFIX=request.node.name)
    yield c
    c.clear()


WEIRD_KEYS = ["plain", "with space", "q?page=2", "frag#ment", "/dataset/x/?page=3", "ünïcödé-키", "a/b/c", "%41%2F"]


def test_set_get_roundtrip_of_python_objects(cache):
    values = {"str": "text", "int": 42, "dict": {"a": [1, 2, (3, 4)]}, "bytes": b"\x00\xff", "none_wrapped": [None]}
    for k, v in values.items():
        cache.set(k, v)
        assert cache.get(k) == v
    assert cache.get("missing") is None
    assert cache.get("missing", "dflt") == "dflt"


def test_pickled_http_response(cache):
    r = HttpResponse("<h1>hello</h1>", headers={"X-Thing": "1"})
    cache.set("resp", r)
    back = cache.get("resp")
    assert back.content == b"<h1>hello</h1>" and back["X-Thing"] == "1"


@pytest.mark.parametrize("key", WEIRD_KEYS)
def test_keys_are_quoted(cache, key):
    cache.set(key, key)
    assert cache.get(key) == key
    for other in WEIRD_KEYS:
        if other != key:
            assert cache.get(other) is None, f"{key!r} leaked into {other!r}"
    assert cache.delete(key) is True
    assert cache.get(key) is None


def test_large_value(cache):
    big = "x" * (3 * 1024 * 1024)
    cache.set("big", big)
    assert cache.get("big") == big


def test_timeout_semantics(cache):
    cache.set("forever", 1, timeout=None)
    cache.set("short", 1, timeout=1)
    cache.set("default", 1)  # TIMEOUT=300
    cache.set("zero", 1, timeout=0)
    cache.set("negative", 1, timeout=-5)
    assert cache.get("zero") is None and cache.get("negative") is None
    assert cache.get("short") == 1
    cache.set("replaced", 1)
    cache.set("replaced", 2, timeout=0)  # Django: an expired set removes the key
    assert cache.get("replaced") is None
    time.sleep(1.3)
    assert cache.get("short") is None
    assert cache.get("forever") == 1 and cache.get("default") == 1


def test_add_only_if_absent(cache):
    assert cache.add("k", "first") is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == "first"
    # Django's contract (its test_zero_timeout): the add succeeds on a free
    # key, and the value is gone at once.
    assert cache.add("z", 1, timeout=0) is True
    assert cache.get("z") is None
    assert cache.add("k", 1, timeout=0) is False
    cache.set("exp", 1, timeout=1)
    time.sleep(1.2)
    assert cache.add("exp", 2) is True, "an expired key counts as absent"


def test_touch(cache):
    cache.set("t", 1, timeout=1)
    assert cache.touch("t", timeout=None) is True
    time.sleep(1.2)
    assert cache.get("t") == 1
    assert cache.touch("t", timeout=1) is True
    time.sleep(1.2)
    assert cache.get("t") is None
    assert cache.touch("absent") is False
    cache.set("t0", 1)
    assert cache.touch("t0", timeout=0) is True
    assert cache.get("t0") is None


def test_delete_has_key(cache):
    cache.set("d", 1)
    assert cache.has_key("d")
    assert cache.delete("d") is True
    assert cache.delete("d") is False
    assert not cache.has_key("d")


def test_many(cache):
    assert cache.set_many({"a": 1, "b": 2, "c": 3}) == []
    assert cache.get_many(["a", "b", "c", "x"]) == {"a": 1, "b": 2, "c": 3}
    cache.delete_many(["a", "b"])
    assert cache.get_many(["a", "b", "c"]) == {"c": 3}


def test_incr_decr(cache):
    cache.set("n", 10)
    assert cache.incr("n") == 11
    assert cache.incr("n", 5) == 16
    assert cache.decr("n", 6) == 10
    with pytest.raises(ValueError):
        cache.incr("missing")


def test_versions(cache):
    cache.set("v", "one", version=1)
    assert cache.get("v", version=2) is None
    cache.set("v", "two", version=2)
    assert cache.get("v", version=1) == "one"
    assert cache.incr_version("v", version=2) == 3
    assert cache.get("v", version=3) == "two"
    assert cache.get("v", version=2) is None


def test_prefix_isolation_and_clear(bigcache):
    a = backend(bigcache.api, KEY_PREFIX="site-a")
    b = backend(bigcache.api, KEY_PREFIX="site-b")
    a.set("k", "a")
    b.set("k", "b")
    assert (a.get("k"), b.get("k")) == ("a", "b")
    a.clear()
    assert a.get("k") is None
    assert b.get("k") == "b", "clear with KEY_PREFIX must spare other prefixes"
    b.clear()


def test_key_function(bigcache):
    import urllib.request

    c = backend(bigcache.api, KEY_FUNCTION=lambda key, prefix, version: f"custom|{key}")
    c.set("x", 1)
    with urllib.request.urlopen(bigcache.api + "/pickle/custom%7Cx") as r:
        assert r.status == 200, "the stored key is the KEY_FUNCTION's"
    c.delete("x")


def test_server_down_is_a_miss_not_an_exception(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = backend(f"http://127.0.0.1:{port}")
    t = time.time()
    assert c.get("k", "dflt") == "dflt"
    c.set("k", 1)
    assert c.add("k", 1) is False
    assert c.delete("k") is False
    assert c.has_key("k") is False
    assert c.touch("k") is False
    assert c.get_many(["a", "b"]) == {}
    c.clear()
    assert time.time() - t < 5
    assert "going on without the cache" in caplog.text


def test_slow_server_times_out_as_a_miss():
    # A listener that accepts and never answers.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    c = BigCacheBackend(f"http://127.0.0.1:{srv.getsockname()[1]}", {"OPTIONS": {"READ_TIMEOUT": 0.3}})
    t = time.time()
    assert c.get("k") is None
    assert time.time() - t < 2
    srv.close()


def test_original_bigcache_class(bigcache):
    old = BigCache(location=bigcache.api + "/cache/")
    key = "/dataset/x/?page=2"
    assert old.set(key, "<html>page 2</html>", timeout="28ds")
    assert old.set("/dataset/x/?page=3", "<html>page 3</html>", timeout="28d")
    assert old.get(key) == "<html>page 2</html>"
    assert old.get("/dataset/x/?page=3") == "<html>page 3</html>"
    assert old.delete(key)
    assert old.get(key) is None
    assert old.set("short", "v", timeout=1)
    time.sleep(1.2)
    assert old.get("short") is None


def test_default_timeout_constant_is_respected(bigcache):
    c = backend(bigcache.api, TIMEOUT=1)
    c.set("d", 1, timeout=DEFAULT_TIMEOUT)
    time.sleep(1.2)
    assert c.get("d") is None


PLANTED = []


def _record_planted(tag):
    PLANTED.append(tag)
    return tag


class _Payload:
    """Unpickling it runs ``_record_planted``: what a planted pickle does."""

    def __reduce__(self):
        return (_record_planted, ("ran",))


def test_a_value_planted_through_the_api_is_never_unpickled(cache, bigcache, caplog):
    """Any process on the machine can write to a loopback bigcache without
    a token: a pickle the site did not sign reads as a miss, unexecuted."""
    import pickle
    import urllib.parse
    import urllib.request

    from django_bigcache.serializers import SIGNED

    cache.set("k", "mine")
    made = cache.make_key("k")
    url = bigcache.api + "/pickle/" + urllib.parse.quote(made, safe="")
    with urllib.request.urlopen(url) as r:
        signed = r.read()
    assert signed.startswith(SIGNED)
    for planted in [pickle.dumps(_Payload()), signed[:-1] + b"X", SIGNED + b"\0" * 32 + pickle.dumps(_Payload())]:
        req = urllib.request.Request(
            url, data=planted, method="POST", headers={"Content-Type": "application/octet-stream"}
        )
        with urllib.request.urlopen(req) as r:
            assert r.status in (200, 201)
        assert cache.get("k", "dflt") == "dflt"
    assert PLANTED == [], "a planted pickle was loaded"
    assert "cannot be read" in caplog.text
    # A value signed for another key does not verify under this one.
    cache.set("other", "theirs")
    other = bigcache.api + "/pickle/" + urllib.parse.quote(cache.make_key("other"), safe="")
    with urllib.request.urlopen(other) as r:
        moved = r.read()
    req = urllib.request.Request(url, data=moved, method="POST", headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req).close()
    assert cache.get("k", "dflt") == "dflt", "a value moved from another key was accepted"
    assert cache.get("other") == "theirs"
