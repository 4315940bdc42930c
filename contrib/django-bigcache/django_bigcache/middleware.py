"""Caching a whole site, or parts of it, without decorating every view:
nginx's ``proxy_cache_valid``, Varnish's ``default_ttl`` or Django's own
``CACHE_MIDDLEWARE_SECONDS``, for the bigcache proxy.

    MIDDLEWARE = [
        "django_bigcache.middleware.BigCacheMiddleware",   # first: it sees the final response
        ...
    ]
    BIGCACHE = {
        "LOCATION": "http://127.0.0.1:36379",
        # First match wins; a path matching none is left as the view made it.
        "PAGES": [
            (r"^/dataset/\\d+/$", "28d"),
            (r"^/datasets/", "1h"),
            (r"^/account/", None),           # never marked, whatever follows
        ],
        # Or every other page (None, the default: only the listed ones).
        "DEFAULT_TTL": "1h",
    }

A matching GET or HEAD answered 200 gets ``X-Bigcache-TTL``, as
``@bigcache_page`` gives it; a view's own ``@bigcache_page`` (or any
``X-Bigcache-TTL`` it set) wins. What bigcache refuses to share stays
unshared whatever a rule says: responses that set cookies, ``private`` or
``no-store`` ones, and requests carrying a session or ``Authorization``.
The rules are read from settings on each request, so ``override_settings``
and a settings reload apply at once.
"""

import re
from functools import lru_cache

from django.conf import settings

from .decorators import TTL_HEADER

CACHED_STATUSES = (200,)


@lru_cache(maxsize=64)
def _compiled(rules):
    return tuple((re.compile(pattern), ttl) for pattern, ttl in rules)


def ttl_for(path):
    """The lifetime the settings give ``path`` (``"28d"``), or ``None``."""
    conf = getattr(settings, "BIGCACHE", None) or {}
    rules = tuple((p, _duration(t)) for p, t in conf.get("PAGES", ()))
    for pattern, ttl in _compiled(rules):
        if pattern.search(path):
            return ttl
    return _duration(conf.get("DEFAULT_TTL"))


def _duration(ttl):
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, str)):
        raise TypeError(f"BIGCACHE lifetimes are strings like '28d' or seconds as an int, not {ttl!r}")
    return f"{ttl}s" if isinstance(ttl, int) else ttl


class BigCacheMiddleware:
    """Marks the responses ``BIGCACHE["PAGES"]`` (and ``DEFAULT_TTL``)
    name for the proxy to cache (see the module's doc)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.method in ("GET", "HEAD")
            and response.status_code in CACHED_STATUSES
            and TTL_HEADER not in response
        ):
            ttl = ttl_for(request.path)
            if ttl:
                response[TTL_HEADER] = ttl
        return response
