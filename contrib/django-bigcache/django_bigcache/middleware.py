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
``X-Bigcache-TTL`` it set) wins, and so does a view that said how long its
response may be kept (``max-age``, ``s-maxage``, ``no-cache``, ``Expires``).
Never marked: a response to a logged-in user (``request.user`` looked at
and authenticated, by Django's or another framework's authentication: the
proxy bypasses only the session cookies it is told of and
``Authorization``). A request carrying the language cookie makes the page
vary on ``Cookie``: ``LocaleMiddleware`` renders from it but varies only on
``Accept-Language``. What the proxy refuses to share stays unshared
whatever a rule says: responses that set cookies, ``private`` or
``no-store`` ones, requests carrying a session or ``Authorization``.

The rules are read from settings on each request, so ``override_settings``
and a settings reload apply at once; rules that cannot work are reported
by ``manage.py check`` (``django_bigcache.E003``) and, at run time, logged
once per configuration and ignored: a mistake in them never fails a page.
"""

import re
from functools import lru_cache

from django.conf import settings
from django.utils.cache import patch_vary_headers
from django.utils.functional import empty

from .client import log
from .decorators import TTL_HEADER

CACHED_STATUSES = (200,)

# The lifetimes the proxy reads (humantime spans, and the original
# connector's "28ds"): checked here so a rule the proxy would refuse is
# reported, not silently never cached.
_SPAN = r"\d+(?:ns|us|ms|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours" \
        r"|d|day|days|w|week|weeks|M|month|months|y|year|years)"
LIFETIME = re.compile(rf"^(?:{_SPAN})(?:\s*{_SPAN})*$|^\d+[smhd]")

# The view's own say on how long its response may be kept.
_OWN_FRESHNESS = re.compile(r"(?:^|[,\s])(?:max-age|s-maxage|no-cache|no-store|private)\b", re.I)


def lifetime(ttl):
    """``ttl`` as the proxy reads it (``"28d"``; seconds as an int), or
    ``None``; ``ValueError`` for anything else."""
    if ttl is None:
        return None
    if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0:
        return f"{ttl}s"
    if isinstance(ttl, str) and LIFETIME.match(ttl.strip()):
        return ttl.strip()
    raise ValueError(f"{ttl!r} is not a lifetime: '30s', '6h', '28d', '1h 30m', or seconds as an int")


def rules(conf):
    """``BIGCACHE["PAGES"]`` compiled: ``[(regex, lifetime or None)]``, and
    the default; ``ValueError`` saying what is wrong."""
    pages = conf.get("PAGES", ())
    if not isinstance(pages, (list, tuple)):
        raise ValueError("BIGCACHE['PAGES'] is a list of (regex, lifetime) pairs")
    compiled = []
    for rule in pages:
        if not isinstance(rule, (list, tuple)) or len(rule) != 2:
            raise ValueError(f"{rule!r} is not a (regex, lifetime) pair")
        pattern, ttl = rule
        try:
            compiled.append((re.compile(pattern), lifetime(ttl)))
        except (re.error, TypeError) as e:
            raise ValueError(f"{rule!r}: {e}") from e
    return compiled, lifetime(conf.get("DEFAULT_TTL"))


@lru_cache(maxsize=64)
def _compiled(key):
    conf = dict(key)
    try:
        return rules({"PAGES": conf.get("PAGES", ()), "DEFAULT_TTL": conf.get("DEFAULT_TTL")})
    except ValueError as e:
        log.error("BIGCACHE page rules ignored: %s", e)
        return [], None


def _freeze(value):
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def ttl_for(path):
    """The lifetime the settings give ``path`` (``"28d"``), or ``None``."""
    conf = getattr(settings, "BIGCACHE", None) or {}
    key = (("PAGES", _freeze(conf.get("PAGES", ()))), ("DEFAULT_TTL", _freeze(conf.get("DEFAULT_TTL"))))
    try:
        compiled, default = _compiled(key)
    except TypeError:  # unhashable settings: not rules that can work
        log.error("BIGCACHE page rules ignored: PAGES is not a list of (regex, lifetime) pairs")
        return None
    for pattern, ttl in compiled:
        if pattern.search(path):
            return ttl
    return default


def _logged_in(request):
    """Whether the request's user was looked at and is authenticated: an
    unevaluated lazy user means the page was not made from it."""
    user = request.__dict__.get("user")
    if user is None:
        return False
    wrapped = getattr(user, "_wrapped", user)
    if wrapped is empty:
        return False
    return bool(getattr(wrapped, "is_authenticated", False))


def _says_own_freshness(response):
    return response.has_header("Expires") or bool(_OWN_FRESHNESS.search(response.get("Cache-Control", "")))


class BigCacheMiddleware:
    """Marks the responses ``BIGCACHE["PAGES"]`` (and ``DEFAULT_TTL``)
    name for the proxy to cache (see the module's doc)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.method not in ("GET", "HEAD")
            or response.status_code not in CACHED_STATUSES
            or TTL_HEADER in response
            or _says_own_freshness(response)
            or _logged_in(request)
        ):
            return response
        ttl = ttl_for(request.path)
        if ttl:
            response[TTL_HEADER] = ttl
            if settings.LANGUAGE_COOKIE_NAME in request.COOKIES:
                patch_vary_headers(response, ["Cookie"])
        return response
