"""Django system checks (``manage.py check``): configuration mistakes that
would otherwise surface only at run time, as a cache that silently misses
or a purge that never arrives. ``manage.py check --deploy`` adds the ones
that matter in production.

Ids: ``django_bigcache.E001`` a node URL that cannot work, ``E002`` a node
off this host without a token, ``E003`` a ``BIGCACHE["PAGES"]`` rule that
cannot work, ``W001`` ``GZipMiddleware`` behind bigcache,
``W002`` the async methods without aiohttp; deploy: ``W101`` a token sent
in clear to another host, ``W102`` ``BIGCACHE`` unset while a bigcache
cache is configured.
"""

import ipaddress
import os
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks

BACKEND = "django_bigcache.backend.BigCacheBackend"
GZIP = "django.middleware.gzip.GZipMiddleware"


def _configured():
    """``(where, location, token)`` for each place nodes are named: every
    ``CACHES`` entry on this backend and ``settings.BIGCACHE``."""
    for alias, conf in (getattr(settings, "CACHES", {}) or {}).items():
        if conf.get("BACKEND") == BACKEND:
            options = conf.get("OPTIONS") or {}
            yield f"CACHES[{alias!r}]", conf.get("LOCATION"), options.get("TOKEN")
    conf = getattr(settings, "BIGCACHE", None)
    if conf:
        yield "BIGCACHE", conf.get("LOCATION"), conf.get("TOKEN")


def _nodes(location):
    """The node URLs ``location`` names, as the backend splits them, or the
    error that makes it unusable."""
    from .client import split_locations

    try:
        return split_locations(location), None
    except (ValueError, TypeError) as e:
        return [], str(e)


def _loopback(host):
    if host in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@checks.register(checks.Tags.caches)
def check_nodes(app_configs=None, **kwargs):
    errors = []
    env_token = os.environ.get("BIGCACHE_API_TOKEN")
    for where, location, token in _configured():
        nodes, problem = _nodes(location)
        if problem:
            errors.append(checks.Error(
                f"{where} LOCATION is unusable: {problem}",
                hint="Give one URL like 'http://127.0.0.1:36379', or a list of them.",
                id="django_bigcache.E001",
            ))
            continue
        for url in nodes:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                errors.append(checks.Error(
                    f"{where} LOCATION names {url!r}, which is not an http(s) URL of a bigcache node",
                    hint="A node is its REST API's root, e.g. 'http://127.0.0.1:36379'.",
                    id="django_bigcache.E001",
                ))
                continue
            if parts.path.strip("/"):
                errors.append(checks.Error(
                    f"{where} LOCATION {url!r} has a path ({parts.path!r}) bigcache's API does not serve",
                    hint="Name the API's root only, e.g. 'http://10.0.0.5:36379'.",
                    id="django_bigcache.E001",
                ))
            if not (token or env_token) and not _loopback(parts.hostname):
                errors.append(checks.Error(
                    f"{where} names {url}, a node on another host, without a token",
                    hint="bigcache refuses API requests from other hosts without --api-token; "
                         "set OPTIONS['TOKEN'] (CACHES) or 'TOKEN' (BIGCACHE) to the same value, "
                         "or BIGCACHE_API_TOKEN in the environment.",
                    id="django_bigcache.E002",
                ))
    return errors


@checks.register()
def check_pages(app_configs=None, **kwargs):
    from .middleware import rules

    conf = getattr(settings, "BIGCACHE", None) or {}
    try:
        rules(conf)
    except ValueError as e:
        return [checks.Error(
            f"BIGCACHE page rules are unusable: {e}",
            hint="PAGES is a list of (regex, lifetime) pairs, e.g. [(r'^/dataset/', '28d')]; a lifetime "
                 "is '30s', '6h', '28d', '1h 30m', seconds as an int, or None to leave pages unmarked.",
            id="django_bigcache.E003",
        )]
    return []


@checks.register()
def check_gzip(app_configs=None, **kwargs):
    uses_bigcache = any(True for _ in _configured())
    if uses_bigcache and GZIP in (getattr(settings, "MIDDLEWARE", None) or []):
        return [checks.Warning(
            "GZipMiddleware compresses every response Django renders, and bigcache then keeps "
            "one copy per coding",
            hint="Remove it: bigcache stores each text page once in brotli and decodes it for "
                 "clients that do not accept br (nginx in front gzips for the rest).",
            id="django_bigcache.W001",
        )]
    return []


@checks.register(checks.Tags.caches)
def check_async(app_configs=None, **kwargs):
    from . import client

    if client.aiohttp is None and any(where.startswith("CACHES") for where, _, _ in _configured()):
        return [checks.Warning(
            "aiohttp is not installed: the cache's async methods (aget, aset, ...) will raise",
            hint="pip install 'django-bigcache[async]' if the site calls them; the sync methods, "
                 "the purge helpers and @bigcache_page do not need it.",
            id="django_bigcache.W002",
        )]
    return []


@checks.register(checks.Tags.caches, deploy=True)
def check_deploy(app_configs=None, **kwargs):
    warnings = []
    configured = list(_configured())
    env_token = os.environ.get("BIGCACHE_API_TOKEN")
    for where, location, token in configured:
        nodes, problem = _nodes(location)
        for url in nodes:
            parts = urlsplit(url)
            if (token or env_token) and parts.scheme == "http" and parts.hostname \
                    and not _loopback(parts.hostname):
                warnings.append(checks.Warning(
                    f"{where} sends its API token in clear to {url}",
                    hint="Reach other hosts over a private network or TLS (https:// to a "
                         "terminating proxy).",
                    id="django_bigcache.W101",
                ))
    if any(w.startswith("CACHES") for w, _, _ in configured) and not getattr(settings, "BIGCACHE", None):
        warnings.append(checks.Warning(
            "settings.BIGCACHE is not set: purge_tags(), purge_path() and @bigcache_page's "
            "purges go to BIGCACHE_URL or http://127.0.0.1:36379",
            hint="Set BIGCACHE = {'LOCATION': ..., 'TOKEN': ...} to the nodes your CACHES entry names.",
            id="django_bigcache.W102",
        ))
    return warnings
