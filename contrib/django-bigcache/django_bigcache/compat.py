"""The original connector's ``BigCache`` class (``django_example/big_cache.py``),
kept so existing code keeps working after ``pip install django-bigcache``:

    bigcache = BigCache(location="http://localhost:36379/cache/")
    content = bigcache.get(key)
    bigcache.set(key, response.rendered_content, timeout="28d")
    bigcache.delete(key)

Unlike the original it percent-encodes keys (``?`` and ``#`` no longer
break), uses short timeouts, and treats a down server as a miss. ``timeout``
is a duration string (``"28d"``) or seconds; ``None`` means forever.
"""

import json

from .client import Client, Unavailable, log


class BigCache:
    def __init__(self, location=None, token=None, connect_timeout=0.5, read_timeout=2.0):
        self._client = Client(location, token, connect_timeout, read_timeout)

    def get(self, key):
        try:
            r = self._client.request("GET", self._client.url("cache", key))
        except Unavailable as e:
            log.warning("bigcache get failed, treated as a miss: %s", e)
            return None
        if r.status != 200:
            return None
        return json.loads(r.data).get("value")

    def set(self, key, value, timeout="28d"):
        body = {"value": value}
        if timeout is not None:
            body["duration"] = f"{timeout}s" if isinstance(timeout, (int, float)) else str(timeout)
        try:
            r = self._client.request(
                "POST",
                self._client.url("cache", key),
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
        except Unavailable as e:
            log.warning("bigcache set failed: %s", e)
            return False
        return r.status == 200

    def delete(self, key):
        try:
            r = self._client.request("DELETE", self._client.url("cache", key))
        except Unavailable as e:
            log.warning("bigcache delete failed: %s", e)
            return False
        return r.status == 200
