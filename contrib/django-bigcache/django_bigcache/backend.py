"""A Django cache backend over bigcache's REST API.

    CACHES = {
        "default": {
            "BACKEND": "django_bigcache.backend.BigCacheBackend",
            "LOCATION": "http://127.0.0.1:36379",   # or a list of nodes
            "TIMEOUT": 60 * 60 * 24 * 28,
            "OPTIONS": {
                "TOKEN": None, "CONNECT_TIMEOUT": 0.5, "READ_TIMEOUT": 2.0,
                "IGNORE_EXCEPTIONS": True, "LOG_IGNORED_EXCEPTIONS": True,
                "SERIALIZER": "pickle", "COMPRESSOR": None,
            },
        }
    }

Values are serialized (``serializers``: pickle by default) and stored
through ``/pickle/<key>``; keys are built by Django (``KEY_PREFIX``,
``VERSION``, ``KEY_FUNCTION``) and percent-encoded whole. Django's timeout
rules hold: ``None`` is forever, ``0`` or less is already expired (nothing
is stored), the default is ``TIMEOUT``. Lifetimes go to the server as
durations (``X-Bigcache-TTL: 300s``), so the clocks of the Django hosts do
not matter. ``add`` and ``incr``/``decr`` are atomic on the server;
``get_many``/``set_many``/``delete_many`` take one request per node.

A server that is down or failing: with ``IGNORE_EXCEPTIONS`` (the default)
it behaves as a miss (``add``/``touch``/``delete`` report failure), logged
at WARNING unless ``LOG_IGNORED_EXCEPTIONS`` is off; without it, calls
raise ``django_bigcache.client.Unavailable``.

``clear()`` empties the whole bigcache server (pages included), as Django
documents for ``clear``, unless ``KEY_PREFIX`` is set: then only keys under
that prefix go.

With several nodes each key lives on one, chosen by consistent hashing
(``client.Ring``); a node that is down is a miss for its keys only, and
``clear()`` goes to every node.
"""

import asyncio
import base64
import fnmatch
import json
import math
import re
from urllib.parse import urlencode

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, InvalidCacheKey

from .client import Call, Nodes, Unavailable, log
from .serializers import Codec, legacy_int

#: The longest lifetime the server takes (100 years), less a margin.
MAX_TTL_SECONDS = 95 * 365 * 24 * 3600
#: Most keys the server takes in one bulk call.
MANY = 1000
#: Most base64 value bytes sent in one ``set_many`` request.
MANY_BYTES = 8 * 1024 * 1024


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
        self._ignore = options.get("IGNORE_EXCEPTIONS", True)
        self._log_ignored = options.get("LOG_IGNORED_EXCEPTIONS", True)
        self._reverse = options.get("REVERSE_KEY_FUNCTION")
        if isinstance(self._reverse, str):
            from django.utils.module_loading import import_string

            self._reverse = import_string(self._reverse)
        self._custom_key_func = params.get("KEY_FUNCTION") is not None
        self._codec = Codec(
            options.get("SERIALIZER", "pickle"),
            options.get("COMPRESSOR"),
            options.get("COMPRESS_MIN_LENGTH", 1024),
        )

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

    def _locate(self, key, version, route="pickle"):
        """The node that holds ``key`` and the key's URL there."""
        key = self.make_and_validate_key(key, version=version)
        client = self._nodes.for_key(key)
        return client, client.url(route, key)

    def _server_key(self, key, version):
        """``key`` as the server names it (outer slashes stripped, as from
        a URL): what a value's signature covers, however it is read."""
        return self.make_key(key, version=version).strip("/")

    def _ttl(self, timeout):
        """Seconds to live for a Django timeout: ``None`` forever, ``<= 0``
        already expired."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return min(float(timeout), MAX_TTL_SECONDS)

    @staticmethod
    def _ttl_text(seconds):
        # Milliseconds, so a float timeout (Django allows 0.5) keeps its value.
        return f"{max(1, math.ceil(seconds * 1000))}ms"

    def _ttl_headers(self, seconds):
        return {} if seconds is None else {"X-Bigcache-TTL": self._ttl_text(seconds)}

    def _failed(self, what, e):
        if not self._ignore:
            raise e
        if self._log_ignored:
            log.warning("bigcache %s failed; going on without the cache: %s", what, e)

    # Every operation is written once, as a generator that yields the
    # requests it needs (a ``Call``, or a list to send at once) and gets
    # their answers back (``None`` for a node that failed, when failures are
    # ignored); ``_drive`` runs it over urllib3 for the sync API, ``_adrive``
    # over aiohttp for Django's async one (``aget``, ``aset``, ...), so both
    # share every rule and option.

    def _drive(self, op):
        try:
            call = next(op)
            while True:
                if isinstance(call, list):
                    answer = [self._perform(c) for c in call]
                else:
                    answer = self._perform(call)
                call = op.send(answer)
        except StopIteration as done:
            return done.value

    async def _adrive(self, op):
        try:
            call = next(op)
            while True:
                if isinstance(call, list):
                    answer = list(await asyncio.gather(*(self._aperform(c) for c in call)))
                else:
                    answer = await self._aperform(call)
                call = op.send(answer)
        except StopIteration as done:
            return done.value

    def _perform(self, call):
        try:
            return call.client.request(call.method, call.url, body=call.body, headers=call.headers)
        except Unavailable as e:
            self._failed(call.what, e)
            return None

    async def _aperform(self, call):
        try:
            return await call.client.arequest(call.method, call.url, body=call.body, headers=call.headers)
        except Unavailable as e:
            self._failed(call.what, e)
            return None

    def _decode(self, made, data):
        """The value stored as ``data`` under the server key ``made``."""
        key = made
        try:
            return True, self._codec.loads(data, made)
        except Exception as e:  # a value not written by this backend, or with other OPTIONS
            log.warning("bigcache value for %r cannot be read: %s", key, e)
            return False, None

    @staticmethod
    def _ok(r):
        return r is not None and r.status == 200

    # -- the operations ----------------------------------------------------

    def _get(self, key, default, version):
        r = yield Call("get", *self._locate(key, version), "GET")
        if not self._ok(r):
            return default
        ok, value = self._decode(self._server_key(key, version), r.data)
        return value if ok else default

    def _set(self, key, value, timeout, version):
        target = self._locate(key, version)
        ttl = self._ttl(timeout)
        if ttl is not None and ttl <= 0:
            yield Call("delete", *target, "DELETE")
            return
        made = self._server_key(key, version)
        yield Call("set", *target, "POST", self._codec.dumps(value, made), self._ttl_headers(ttl))

    def _add(self, key, value, timeout, version):
        target = self._locate(key, version)
        ttl = self._ttl(timeout)
        if ttl is not None and ttl <= 0:
            # Django's contract: the add succeeds (the key was free) and the
            # value is gone at once; nothing to store.
            return not (yield from self._has_key(key, version))
        headers = self._ttl_headers(ttl)
        headers["X-Bigcache-Mode"] = "add"
        made = self._server_key(key, version)
        return self._ok((yield Call("add", *target, "POST", self._codec.dumps(value, made), headers)))

    def _touch(self, key, timeout, version):
        target = self._locate(key, version)
        ttl = self._ttl(timeout)
        if ttl is not None and ttl <= 0:
            return self._ok((yield Call("delete", *target, "DELETE")))
        return self._ok((yield Call("touch", *target, "PATCH", None, self._ttl_headers(ttl))))

    def _delete(self, key, version):
        return self._ok((yield Call("delete", *self._locate(key, version), "DELETE")))

    def _has_key(self, key, version):
        return self._ok((yield Call("has_key", *self._locate(key, version), "HEAD")))

    def _ttl_left(self, key, version):
        r = yield Call("ttl", *self._locate(key, version), "HEAD")
        if not self._ok(r):
            return 0
        left = r.headers.get("X-Bigcache-TTL")
        return None if left is None else int(left)

    def _incr(self, key, delta, version):
        target = self._locate(key, version, "incr")
        body = json.dumps({"delta": delta}).encode()
        for attempt in range(2):
            r = yield Call("incr", *target, "POST", body, {"Content-Type": "application/json"})
            if r is None or r.status == 404:
                raise ValueError(f"Key '{key}' not found")
            if r.status == 200:
                return json.loads(r.data)["value"]
            if r.status != 409 or attempt:
                raise TypeError(f"bigcache cannot increment '{key}': HTTP {r.status} {r.data[:200]!r}")
            # Stored pickled, by this connector before it wrote integers as
            # text: rewrite it as text once, keeping its lifetime, and
            # retry. (An increment by another process between the read and
            # the rewrite would be lost: this happens once per such key.)
            raw = yield Call("incr", *self._locate(key, version), "GET")
            if raw is None or raw.status != 200 or not raw.data.startswith(b"\x80"):
                raise TypeError(f"'{key}' does not hold an integer bigcache can add to")
            # Unsigned (written before values were signed): read without
            # letting the pickle name anything.
            value = legacy_int(raw.data)
            if value is None:
                raise TypeError(f"'{key}' does not hold an integer")
            left = raw.headers.get("X-Bigcache-TTL")
            if left == "0":
                raise ValueError(f"Key '{key}' not found")
            yield from self._set(key, value, None if left is None else int(left), version)

    def _by_node(self, keys, version):
        """[(node, [(server key, caller's key)])], in chunks the server
        takes. The server key is as the server names it (outer slashes
        stripped, as from a URL)."""
        groups = {}
        for key in keys:
            made = self.make_and_validate_key(key, version=version)
            groups.setdefault(self._nodes.for_key(made), []).append((made.strip("/"), key))
        return [(node, pairs[i : i + MANY]) for node, pairs in groups.items() for i in range(0, len(pairs), MANY)]

    @staticmethod
    def _many_call(what, client, route, payload):
        return Call(what, client, f"{client.base}/many/{route}", "POST", json.dumps(payload).encode(),
                    {"Content-Type": "application/json"})

    def _many_answer(self, what, r):
        if r is None:
            return None
        try:
            if r.status != 200:
                raise ValueError(f"HTTP {r.status}")
            return json.loads(r.data)
        except ValueError as e:
            self._failed(what, Unavailable(f"{what}: {e}: {r.data[:200]!r}"))
            return None

    def _get_many(self, keys, version):
        chunks = self._by_node(keys, version)
        found = {}
        while chunks:
            answers = yield [self._many_call("get_many", c, "get", {"keys": [m for m, _ in pairs]})
                             for c, pairs in chunks]
            again = []
            for (client, pairs), r in zip(chunks, answers):
                names = dict(pairs)
                answer = self._many_answer("get_many", r) or {}
                for made, entry in (answer.get("values") or {}).items():
                    if made in names:
                        ok, value = self._decode(made, base64.b64decode(entry["value"]))
                        if ok:
                            found[names[made]] = value
                # The server stops at its body limit and names the rest.
                rest = [(m, names[m]) for m in answer.get("skipped") or () if m in names]
                if rest and len(rest) < len(pairs):
                    again.append((client, rest))
            chunks = again
        return found

    def _set_many(self, data, timeout, version):
        ttl = self._ttl(timeout)
        if ttl is not None and ttl <= 0:
            yield from self._delete_many(list(data), version)
            return []
        ttl_text = None if ttl is None else self._ttl_text(ttl)
        # Bodies stay under the server's default 16 MiB limit: items are
        # grouped up to MANY_BYTES of base64, a larger value goes alone.
        chunks = []
        for client, pairs in self._by_node(data, version):
            batch, size = [], 0
            for made, key in pairs:
                item = {"key": made, "value": base64.b64encode(self._codec.dumps(data[key], made)).decode(),
                        "ttl": ttl_text}
                if batch and size + len(item["value"]) > MANY_BYTES:
                    chunks.append((client, batch))
                    batch, size = [], 0
                batch.append((key, item))
                size += len(item["value"])
            if batch:
                chunks.append((client, batch))
        answers = yield [self._many_call("set_many", c, "set", {"items": [item for _, item in batch]})
                         for c, batch in chunks]
        return [key for (_, batch), r in zip(chunks, answers) if self._many_answer("set_many", r) is None
                for key, _ in batch]

    def _delete_many(self, keys, version):
        chunks = self._by_node(keys, version)
        answers = yield [self._many_call("delete_many", c, "delete", {"keys": [m for m, _ in pairs]})
                         for c, pairs in chunks]
        for r in answers:
            self._many_answer("delete_many", r)

    def _clear(self):
        def call(c):
            if self._prefix:
                return Call(f"clear on {c.base}", c, c.url("prefix", f"{self._prefix}:"), "DELETE")
            return Call(f"clear on {c.base}", c, f"{c.base}/clear", "POST")

        yield [call(c) for c in self._nodes.clients]

    # -- the cache API, sync and async ------------------------------------

    def get(self, key, default=None, version=None):
        return self._drive(self._get(key, default, version))

    async def aget(self, key, default=None, version=None):
        return await self._adrive(self._get(key, default, version))

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        self._drive(self._set(key, value, timeout, version))

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        await self._adrive(self._set(key, value, timeout, version))

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._drive(self._add(key, value, timeout, version))

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return await self._adrive(self._add(key, value, timeout, version))

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._drive(self._touch(key, timeout, version))

    async def atouch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return await self._adrive(self._touch(key, timeout, version))

    def delete(self, key, version=None):
        return self._drive(self._delete(key, version))

    async def adelete(self, key, version=None):
        return await self._adrive(self._delete(key, version))

    def has_key(self, key, version=None):
        return self._drive(self._has_key(key, version))

    async def ahas_key(self, key, version=None):
        return await self._adrive(self._has_key(key, version))

    def incr(self, key, delta=1, version=None):
        """Atomic on the server. A missing key is ``ValueError`` (Django's
        contract), as is a server that cannot be reached unless
        ``IGNORE_EXCEPTIONS`` is off; a value that is not an integer is
        ``TypeError``."""
        return self._drive(self._incr(key, delta, version))

    async def aincr(self, key, delta=1, version=None):
        return await self._adrive(self._incr(key, delta, version))

    async def adecr(self, key, delta=1, version=None):
        return await self.aincr(key, -delta, version)

    def get_many(self, keys, version=None):
        return self._drive(self._get_many(keys, version))

    async def aget_many(self, keys, version=None):
        return await self._adrive(self._get_many(keys, version))

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._drive(self._set_many(data, timeout, version))

    async def aset_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return await self._adrive(self._set_many(data, timeout, version))

    def delete_many(self, keys, version=None):
        self._drive(self._delete_many(keys, version))

    async def adelete_many(self, keys, version=None):
        await self._adrive(self._delete_many(keys, version))

    def clear(self):
        self._drive(self._clear())

    async def aclear(self):
        await self._adrive(self._clear())

    # -- django-redis' extras ------------------------------------------

    def ttl(self, key, version=None):
        """Seconds left (rounded up), ``None`` for a key that never expires,
        0 for a missing one (django-redis' answers)."""
        return self._drive(self._ttl_left(key, version))

    async def attl(self, key, version=None):
        return await self._adrive(self._ttl_left(key, version))

    def expire(self, key, timeout, version=None):
        """A new lifetime for an existing key (``touch``)."""
        return self.touch(key, timeout, version)

    def persist(self, key, version=None):
        """Makes an existing key never expire."""
        return self.touch(key, None, version)

    # -- keys by pattern -------------------------------------------------

    def _reverse_key(self, made, version):
        """The caller's key from the server's: Django's default
        ``KEY_FUNCTION`` is ``prefix:version:key`` (the prefix may hold
        ``:`` too); a custom one needs ``OPTIONS["REVERSE_KEY_FUNCTION"]``."""
        if self._reverse is not None:
            return self._reverse(made)
        head = self.make_key("", version=version)
        return made[len(head):] if made.startswith(head) else None

    def iter_keys(self, pattern="*", version=None, itersize=1000):
        """The keys (as the caller names them) matching the glob ``pattern``
        (``*``, ``?``, ``[abc]``; ``fnmatch``, case-sensitive) in this
        cache's ``KEY_PREFIX`` and ``version``, a page of ``itersize`` at a
        time from each node. The pattern's literal start (before the first
        wildcard) goes to the server as a prefix, so ``"dataset:42:*"``
        reads only those keys; ``"*"`` reads every key of the version."""
        literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        if self._custom_key_func and self._reverse is None:
            raise ValueError("iter_keys with a custom KEY_FUNCTION needs OPTIONS['REVERSE_KEY_FUNCTION']")
        prefix = self.make_key(literal, version=version) if not self._custom_key_func else ""
        for client in self._nodes.clients:
            after = None
            while True:
                query = {"prefix": prefix, "limit": min(int(itersize), 1000)}
                if after is not None:
                    query["after"] = after
                try:
                    r = client.request("GET", f"{client.base}/keys?{urlencode(query)}")
                except Unavailable as e:
                    self._failed("iter_keys", e)
                    break
                if r.status != 200:
                    self._failed("iter_keys", Unavailable(f"GET /keys: HTTP {r.status} {r.data[:200]!r}"))
                    break
                page = json.loads(r.data)
                for made in page["keys"]:
                    key = self._reverse_key(made, version)
                    if key is not None and self.make_key(key, version=version) == made \
                            and fnmatch.fnmatchcase(key, pattern):
                        yield key
                after = page.get("next")
                if after is None:
                    break

    def keys(self, pattern="*", version=None):
        return list(self.iter_keys(pattern, version))

    def delete_pattern(self, pattern, version=None, itersize=1000):
        """Deletes the keys ``iter_keys`` finds; returns how many there were."""
        found = list(self.iter_keys(pattern, version, itersize))
        self.delete_many(found, version)
        return len(found)

    # -- locks -------------------------------------------------------------

    def lock(self, key, timeout=None, sleep=0.1, blocking=True, blocking_timeout=None, version=None):
        """A lock on ``key``, held by whoever adds it first (atomic on the
        server) and released only by its holder (a compare-and-delete of
        its random token). ``timeout`` (seconds) makes it expire if the
        holder dies; without one it lasts until released."""
        from .lock import Lock

        return Lock(self, key, timeout, sleep, blocking, blocking_timeout, version)

    async def aclose(self, **kwargs):
        """Closes this event loop's connections (Django calls ``close`` at
        the end of each request; a long-lived loop keeps them)."""
        for c in self._nodes.clients:
            await c.aclose()

    def close(self, **kwargs):
        # Connections are pooled for the process; nothing to close per request.
        pass
