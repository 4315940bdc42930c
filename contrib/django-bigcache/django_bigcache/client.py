"""The HTTP client every part of the package shares: a pooled urllib3
connection manager with short timeouts per node, and the set of nodes a site
uses. A cache that is down or slow must cost a page a few hundred
milliseconds at most, never an exception.

Several nodes (``LOCATION`` as a list, as django-redis and pymemcache take
it) are for a site sharded across bigcache nodes behind nginx: REST values
live on one node chosen by consistent hashing of the key, so adding or
removing one of N nodes moves about 1/N of them; page purges go to every
node, since a page may sit on any node that stood in for its own.
"""

import asyncio
import bisect
import hashlib
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

import urllib3

try:  # the async methods' transport: ``pip install django-bigcache[async]``
    import aiohttp
    import yarl
except ImportError:  # pragma: no cover - exercised by a subprocess test
    aiohttp = yarl = None

ASYNC_MISSING = (
    "django-bigcache's async cache methods (aget, aset, ...) need aiohttp: "
    "pip install 'django-bigcache[async]'"
)

log = logging.getLogger("django_bigcache")

DEFAULT_LOCATION = "http://127.0.0.1:36379"


class Unavailable(Exception):
    """The bigcache server could not be reached or failed (5xx)."""


def split_locations(location):
    """``LOCATION`` as Django's memcached backends take it: a list, or one
    string with nodes separated by ``,`` or ``;``. ``None`` falls back to
    ``BIGCACHE_URL`` (same forms), then to the local default."""
    if not location:
        location = os.environ.get("BIGCACHE_URL") or DEFAULT_LOCATION
    if isinstance(location, str):
        location = re.split(r"[;,]", location)
    nodes = [base_url(loc) for loc in location if str(loc).strip()]
    if not nodes:
        raise ValueError("bigcache LOCATION names no node")
    if len(set(n.lower() for n in nodes)) != len(nodes):
        raise ValueError(f"bigcache LOCATION names a node twice: {nodes}")
    return nodes


def base_url(location):
    """A node's API root: no trailing slash, and without the ``/cache/``
    the original connector's ``LOCATION`` ended in."""
    location = str(location).strip().rstrip("/")
    for suffix in ("/cache", "/pickle"):
        if location.endswith(suffix):
            location = location[: -len(suffix)]
    return location


@dataclass
class Call:
    """One request an operation needs (see ``backend``): run with
    ``Client.request`` or ``Client.arequest``."""

    what: str
    client: "Client"
    url: str
    method: str
    body: bytes = None
    headers: dict = None


class Answer:
    """An aiohttp response, read, with the attributes of urllib3's the
    backend reads (``status``, ``data``, ``headers``), so one code path
    reads both."""

    __slots__ = ("status", "data", "headers")

    def __init__(self, status, data, headers):
        self.status, self.data, self.headers = status, data, headers


class Client:
    """One bigcache node's REST API."""

    def __init__(self, location=None, token=None, connect_timeout=0.5, read_timeout=2.0, pool_size=10):
        self.base = base_url(location or os.environ.get("BIGCACHE_URL") or DEFAULT_LOCATION)
        token = token if token is not None else os.environ.get("BIGCACHE_API_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = urllib3.PoolManager(
            maxsize=pool_size,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
        )
        self._timeouts = (connect_timeout, read_timeout)
        self._pool_size = pool_size
        # An aiohttp session belongs to the event loop it was made in:
        # {loop: (session, keeper)}, see ``_session``.
        self._async = {}

    def url(self, route, key):
        """``route`` is ``cache``, ``pickle`` or ``prefix``; the key is
        percent-encoded whole, so ``?``, ``#``, spaces and unicode are safe,
        and dots too: HTTP clients resolve a ``..`` segment, which would
        aim the request at another route."""
        return f"{self.base}/{route}/{quote(key, safe='').replace('.', '%2E')}"

    def _headers(self, body, headers):
        all_headers = dict(self.headers)
        if headers:
            all_headers.update(headers)
        if body is not None and not any(k.lower() == "content-type" for k in all_headers):
            # bigcache refuses writes without an explicit, non-form type.
            all_headers["Content-Type"] = "application/octet-stream"
        return all_headers

    @staticmethod
    def _checked(method, url, r):
        if r.status >= 500 or r.status in (401, 403):
            raise Unavailable(f"{method} {url}: HTTP {r.status} {r.data[:200]!r}")
        return r

    def request(self, method, url, body=None, headers=None):
        try:
            r = self.http.request(method, url, body=body, headers=self._headers(body, headers))
        except urllib3.exceptions.HTTPError as e:
            raise Unavailable(f"{method} {url}: {e}") from e
        return self._checked(method, url, r)

    async def arequest(self, method, url, body=None, headers=None):
        """``request`` on the running event loop, without a thread hop."""
        session = await self._session()
        try:
            # yarl would re-quote the percent-encoded key; keep it as built.
            async with session.request(method, yarl.URL(url, encoded=True), data=body,
                                       headers=self._headers(body, headers)) as r:
                answer = Answer(r.status, await r.read(), r.headers)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise Unavailable(f"{method} {url}: {type(e).__name__}: {e}") from e
        return self._checked(method, url, answer)

    async def _session(self):
        """This event loop's session. Django runs an async view under WSGI
        in an event loop of its own per request (asgiref), so a session
        must not outlive its loop: an async generator parked per session
        closes it when the loop shuts its generators down (``asyncio.run``
        and asgiref both do), and sessions of loops closed otherwise are
        dropped here."""
        if aiohttp is None:
            raise ImportError(ASYNC_MISSING)
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is not None and not entry[0].closed:
            return entry[0]
        for other in [lp for lp in self._async if lp.is_closed()]:
            del self._async[other]
        connector = aiohttp.TCPConnector(limit=self._pool_size * 5)
        connect, read = self._timeouts
        timeout = aiohttp.ClientTimeout(sock_connect=connect, sock_read=read, connect=connect + read)
        session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                        skip_auto_headers=("User-Agent",))
        keeper = self._keep(loop, session)
        await keeper.__anext__()
        self._async[loop] = (session, keeper)
        return session

    async def _keep(self, loop, session):
        try:
            yield
        finally:
            if self._async.get(loop, (None,))[0] is session:
                del self._async[loop]
            await session.close()

    async def aclose(self):
        """Closes this event loop's session (``BigCacheBackend.aclose``)."""
        entry = self._async.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].close()


class Ring:
    """Consistent hashing in the ketama manner: every node owns 160 points
    on a 32-bit circle (four per MD5 digest of ``"<location>-<i>"``), and a
    key belongs to the first point at or after the first four bytes of its
    own digest. The points depend only on the locations (lower-cased), not
    on their order, so every Django process with the same nodes places a
    key on the same node."""

    POINTS_PER_NODE = 160

    def __init__(self, nodes):
        points = []
        for node in nodes:
            for i in range(self.POINTS_PER_NODE // 4):
                digest = hashlib.md5(f"{node.base.lower()}-{i}".encode()).digest()
                for j in range(4):
                    points.append((int.from_bytes(digest[4 * j : 4 * j + 4], "little"), node.base, node))
        points.sort(key=lambda p: (p[0], p[1]))
        self._hashes = [p[0] for p in points]
        self._nodes = [p[2] for p in points]

    def node(self, key):
        h = int.from_bytes(hashlib.md5(key.encode("utf-8", "surrogatepass")).digest()[:4], "little")
        return self._nodes[bisect.bisect_left(self._hashes, h) % len(self._nodes)]


_fan_out_pool = None
_fan_out_lock = threading.Lock()


def _pool():
    global _fan_out_pool
    with _fan_out_lock:
        if _fan_out_pool is None:
            _fan_out_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="bigcache-fan-out")
        return _fan_out_pool


def _forget_pool():
    """A forked child (gunicorn --preload) has none of its parent's threads:
    it starts its own pool."""
    global _fan_out_pool, _fan_out_lock
    _fan_out_pool, _fan_out_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


class Nodes:
    """The bigcache nodes a site uses: one, or several sharing the work."""

    def __init__(self, clients):
        self.clients = list(clients)
        self._ring = Ring(self.clients) if len(self.clients) > 1 else None

    @classmethod
    def from_location(cls, location=None, token=None, **client_options):
        return cls(Client(loc, token, **client_options) for loc in split_locations(location))

    def for_key(self, key):
        """The node that holds REST key ``key``."""
        return self._ring.node(key) if self._ring else self.clients[0]

    def each(self, call):
        """Runs ``call(client)`` on every node, in parallel when there are
        several, and gives ``[(client, result or Unavailable)]`` in node
        order: one node's failure never hides the others' answers, and
        nothing raises into the caller (a purge runs inside a model save)."""

        def guarded(client):
            try:
                return call(client)
            except Unavailable as e:
                return e
            except Exception as e:  # an answer that is not bigcache's, a bad key
                return Unavailable(f"{client.base}: {type(e).__name__}: {e}")

        if len(self.clients) == 1:
            return [(self.clients[0], guarded(self.clients[0]))]
        futures = [(c, _pool().submit(guarded, c)) for c in self.clients]
        return [(c, f.result()) for c, f in futures]


def as_nodes(client):
    """Purge helpers take a ``Client`` (one node) or ``Nodes``."""
    if client is None:
        return default_client()
    return Nodes([client]) if isinstance(client, Client) else client


_defaults = {}
_defaults_lock = threading.Lock()


def default_client():
    """The ``Nodes`` configured from ``settings.BIGCACHE`` (a dict with
    ``LOCATION``, one URL or a list, and optional ``TOKEN``) or the
    environment. Read on each call, so ``override_settings`` reaches the
    purge helpers; one ``Nodes`` (and its connection pools) is kept per
    configuration."""
    conf = {}
    try:
        from django.conf import settings

        conf = getattr(settings, "BIGCACHE", {}) or {}
    except Exception:  # settings not configured: environment only
        conf = {}
    location, token = conf.get("LOCATION"), conf.get("TOKEN")
    key = (
        tuple(location) if isinstance(location, (list, tuple)) else location,
        token,
        os.environ.get("BIGCACHE_URL"),
        os.environ.get("BIGCACHE_API_TOKEN"),
    )
    with _defaults_lock:
        nodes = _defaults.get(key)
        if nodes is None:
            nodes = _defaults[key] = Nodes.from_location(location, token)
        return nodes
