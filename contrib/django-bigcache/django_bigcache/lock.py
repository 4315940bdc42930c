"""``cache.lock("name", timeout=10)``: a lock shared by every process using
the cache, as django-redis gives (redis-py's ``Lock``).

    with cache.lock("rebuild-index", timeout=60):
        ...                       # one process at a time

The lock is a key added atomically (``X-Bigcache-Mode: add``) holding a
random token; release deletes it only if it still holds that token
(``X-Bigcache-If-Equals``), so a holder whose lock expired and was taken by
another never releases the other's. Without ``timeout`` a lock whose
holder dies stays taken until deleted by hand: give one.
"""

import secrets
import time



class LockError(Exception):
    """Releasing a lock this holder does not hold (it expired, or was never
    acquired)."""


class Lock:
    def __init__(self, cache, key, timeout, sleep, blocking, blocking_timeout, version):
        self.cache, self.key, self.version = cache, key, version
        self.timeout, self.sleep = timeout, sleep
        self.blocking, self.blocking_timeout = blocking, blocking_timeout
        self.token = None

    def acquire(self, blocking=None, blocking_timeout=None):
        """Takes the lock; returns whether it did. Blocking (the default)
        waits, polling every ``sleep`` seconds, up to ``blocking_timeout``
        (None: forever)."""
        blocking = self.blocking if blocking is None else blocking
        limit = self.blocking_timeout if blocking_timeout is None else blocking_timeout
        deadline = None if limit is None else time.monotonic() + limit
        token = secrets.token_hex(16)
        client, url = self.cache._locate(self.key, self.version)
        headers = {"X-Bigcache-Mode": "add", "Content-Type": "application/octet-stream",
                   **self.cache._ttl_headers(self.timeout)}
        while True:
            # A server that cannot be reached raises Unavailable whatever
            # IGNORE_EXCEPTIONS says: a lock that silently is not one would
            # let two holders in.
            r = client.request("POST", url, body=token.encode(), headers=headers)
            if r.status == 200:
                self.token = token
                return True
            if r.status != 409:  # not "held by another": waiting cannot help
                raise LockError(f"lock {self.key!r}: HTTP {r.status} {r.data[:200]!r}")
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(self.sleep)

    def release(self):
        if self.token is None:
            raise LockError("cannot release a lock that is not held")
        token, self.token = self.token, None
        client, url = self.cache._locate(self.key, self.version)
        r = client.request("DELETE", url, headers={"X-Bigcache-If-Equals": token})
        if r.status != 200:
            raise LockError(f"lock {self.key!r} was no longer held (expired, or taken by another)")

    def locked(self):
        return self.cache.has_key(self.key, self.version)

    def __enter__(self):
        if not self.acquire():
            raise LockError(f"could not acquire lock {self.key!r}")
        return self

    def __exit__(self, *exc):
        self.release()
