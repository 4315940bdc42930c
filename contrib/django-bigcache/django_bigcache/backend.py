"""A Django cache backend over bigcache's REST API.

    CACHES = {
        "default": {
            "BACKEND": "django_bigcache.backend.BigCacheBackend",
            "LOCATION": "http://127.0.0.1:36379",   # or a list of nodes
            "TIMEOUT": 60 * 60 * 24 * 28,
            "OPTIONS": {"TOKEN": None, "CONNECT_TIMEOUT": 0.5, "READ_TIMEOUT": 2.0},
        }
    }

Values are pickled and stored through ``/pickle/<key>``, keys are built by
Django (``KEY_PREFIX``, ``VERSION``, ``KEY_FUNCTION``) and percent-encoded
whole. Django's timeout rules hold: ``None`` is forever, ``0`` or less is
already expired (nothing is stored), the default is ``TIMEOUT``. ``add`` is
atomic on the server. A server that is down or slow behaves as a miss (and
``add``/``touch``/``delete`` report failure); it is logged, never raised.

``clear()`` empties the whole bigcache server (pages included), as Django
documents for ``clear``, unless ``KEY_PREFIX`` is set: then only keys under
that prefix go.

With several nodes each key lives on one, chosen by consistent hashing
(``client.Ring``); a node that is down is a miss for its keys only, and
``clear()`` goes to every node.
"""

import pickle
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, InvalidCacheKey

from .client import Nodes, Unavailable, log


class BigCacheBackend(BaseCache):
    def __init__(self, location, params):
        super().__init__(params)
        options = params.get("OPTIONS", {}) or {}
        self._nodes = Nodes.from_location(
            location,
            options.get("TOKEN"),
            connect_timeout=options.get("CONNECT_TIMEOUT", 0.5),
            read_timeout=options.get("READ_TIMEOUT", 2.0),
            pool_size=options.get("POOL_SIZE", 10),
        )
        self._prefix = params.get("KEY_PREFIX", "") or ""

    # -- helpers -------------------------------------------------------

    def validate_key(self, key):
        """bigcache takes any key (it is percent-encoded on the wire), but
        Django's ``CacheKeyWarning`` for keys memcached would refuse is kept,
        as Django's Redis backend keeps it: it tells a developer the code
        would break on another backend. Beyond the server's limit (4096
        bytes) the key is refused."""
        super().validate_key(key)
        if len(key.encode()) > 4096:
            raise InvalidCacheKey(f"cache key longer than 4096 bytes: {key[:80]!r}...")

    def _locate(self, key, version):
        """The node that holds ``key`` and the key's URL there."""
        key = self.make_and_validate_key(key, version=version)
        client = self._nodes.for_key(key)
        return client, client.url("pickle", key)

    def _expire_headers(self, timeout):
        expire = self.get_backend_timeout(timeout)
        if expire is None:
            return {}
        return {"X-Bigcache-Expire": repr(float(expire))}

    def _expired_already(self, timeout):
        expire = self.get_backend_timeout(timeout)
        return expire is not None and expire <= time.time()

    def _call(self, what, method, target, **kw):
        client, url = target
        try:
            return client.request(method, url, **kw)
        except Unavailable as e:
            log.warning("bigcache %s failed; going on without the cache: %s", what, e)
            return None

    # -- the cache API ---------------------------------------------------

    def get(self, key, default=None, version=None):
        r = self._call("get", "GET", self._locate(key, version))
        if r is None or r.status != 200:
            return default
        try:
            return pickle.loads(r.data)
        except Exception as e:  # a value not written by this backend
            log.warning("bigcache value for %r is not a pickle: %s", key, e)
            return default

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        target = self._locate(key, version)
        if self._expired_already(timeout):
            self._call("delete", "DELETE", target)
            return
        body = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        self._call("set", "POST", target, body=body, headers=self._expire_headers(timeout))

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        target = self._locate(key, version)
        if self._expired_already(timeout):
            # Django's contract: the add succeeds (the key was free) and the
            # value is gone at once; nothing to store.
            return not self.has_key(key, version)
        body = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        headers = self._expire_headers(timeout)
        headers["X-Bigcache-Mode"] = "add"
        r = self._call("add", "POST", target, body=body, headers=headers)
        return r is not None and r.status == 200

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        target = self._locate(key, version)
        if self._expired_already(timeout):
            r = self._call("delete", "DELETE", target)
            return r is not None and r.status == 200
        r = self._call("touch", "PATCH", target, headers=self._expire_headers(timeout))
        return r is not None and r.status == 200

    def delete(self, key, version=None):
        r = self._call("delete", "DELETE", self._locate(key, version))
        return r is not None and r.status == 200

    def has_key(self, key, version=None):
        r = self._call("has_key", "GET", self._locate(key, version))
        return r is not None and r.status == 200

    def clear(self):
        def on_node(c):
            if self._prefix:
                return c.request("DELETE", c.url("prefix", f"{self._prefix}:"))
            return c.request("POST", f"{c.base}/clear")

        for c, outcome in self._nodes.each(on_node):
            if isinstance(outcome, Unavailable):
                log.warning("bigcache clear failed on %s: %s", c.base, outcome)

    def close(self, **kwargs):
        # Connections are pooled for the process; nothing to close per request.
        pass
