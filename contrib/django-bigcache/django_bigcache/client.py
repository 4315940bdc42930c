"""The HTTP client every part of the package shares: a pooled urllib3
connection manager with short timeouts. A cache that is down or slow must
cost a page a few hundred milliseconds at most, never an exception."""

import logging
import os
from urllib.parse import quote

import urllib3

log = logging.getLogger("django_bigcache")

DEFAULT_LOCATION = "http://127.0.0.1:36379"


class Unavailable(Exception):
    """The bigcache server could not be reached or failed (5xx)."""


class Client:
    def __init__(self, location=None, token=None, connect_timeout=0.5, read_timeout=2.0, pool_size=10):
        location = (location or os.environ.get("BIGCACHE_URL") or DEFAULT_LOCATION).rstrip("/")
        # The original connector's LOCATION ended in /cache/; accept it.
        for suffix in ("/cache", "/pickle"):
            if location.endswith(suffix):
                location = location[: -len(suffix)]
        self.base = location
        token = token if token is not None else os.environ.get("BIGCACHE_API_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = urllib3.PoolManager(
            maxsize=pool_size,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
        )

    def url(self, route, key):
        """``route`` is ``cache``, ``pickle`` or ``prefix``; the key is
        percent-encoded whole, so ``?``, ``#``, spaces and unicode are safe."""
        return f"{self.base}/{route}/{quote(key, safe='')}"

    def request(self, method, url, body=None, headers=None):
        all_headers = dict(self.headers)
        if headers:
            all_headers.update(headers)
        if body is not None and not any(k.lower() == "content-type" for k in all_headers):
            # bigcache refuses writes without an explicit, non-form type.
            all_headers["Content-Type"] = "application/octet-stream"
        try:
            r = self.http.request(method, url, body=body, headers=all_headers)
        except urllib3.exceptions.HTTPError as e:
            raise Unavailable(f"{method} {url}: {e}") from e
        if r.status >= 500 or r.status in (401, 403):
            raise Unavailable(f"{method} {url}: HTTP {r.status} {r.data[:200]!r}")
        return r


_default = None


def default_client():
    """A process-wide client configured from ``settings.BIGCACHE`` (a dict
    with ``LOCATION`` and optional ``TOKEN``) or the environment."""
    global _default
    if _default is None:
        conf = {}
        try:
            from django.conf import settings

            conf = getattr(settings, "BIGCACHE", {}) or {}
        except Exception:  # settings not configured: environment only
            conf = {}
        _default = Client(conf.get("LOCATION"), conf.get("TOKEN"))
    return _default
