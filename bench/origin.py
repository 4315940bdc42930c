#!/usr/bin/env python3
"""A fake Django for benchmarks: every GET returns an HTML-like page of
--size bytes after --delay ms, cacheable for an hour by bigcache
(X-Bigcache-TTL) and by nginx (Cache-Control). GET /__count returns how many
page requests it has answered."""
import argparse
import asyncio
import email.utils
import gzip
import random
import socket
import time
import zlib

WORDS = ("dataset table column value annual report region population index "
         "series monthly survey statistics source license update download north "
         "south east west central district station river county total mean").split()
VARIANTS = 64
_tables = {}


def _table(seed: int, size: int) -> str:
    """~size bytes of table rows like a dataset page's: markup repeats, the
    names and figures do not, so each page compresses like real HTML (no
    better). Built once per variant: generating 20 KB per request in Python
    would make the origin, not the caches, the bottleneck."""
    key = (seed % VARIANTS, size)
    if key not in _tables:
        rnd = random.Random(key[0])
        parts, n = [], 0
        while n < size:
            name = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 3)))
            row = (f'<tr class="row"><td class="name"><a href="/dataset/{rnd.randint(1, 99999)}/">'
                   f'{name}</a></td><td class="num">{rnd.uniform(0, 10000):.2f}</td>'
                   f'<td class="num">{rnd.randint(0, 10**6)}</td><td>{rnd.choice(WORDS)}</td></tr>\n')
            parts.append(row)
            n += len(row)
        _tables[key] = "".join(parts)
    return _tables[key]


def page(path: str, size: int) -> bytes:
    """An HTML page of `size` bytes whose head names `path` (so every page
    differs), with one of VARIANTS table bodies chosen by the path."""
    head = f"<html><head><title>{path}</title></head><body><h1>{path}</h1><table>\n"
    seed = zlib.crc32(path.encode())
    return (head + _table(seed, size)).encode()[:size]


_LETTERS = bytes(b"abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(256))


def noise(path: str, size: int) -> bytes:
    """`size` bytes of letters that snappy cannot shrink (--noise): on disk a
    page takes its full size, as in the trace simulations."""
    head = f"<html><head><title>{path}</title></head><body>\n".encode()
    return (head + random.randbytes(size).translate(_LETTERS))[:size]


_date = (0, "")


def http_date() -> str:
    """`Date` as a server sends it, made once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


class Origin:
    """What the origin answers; the HTTP around it is `Connection`'s."""

    def __init__(self, size: int, delay: int, noise: bool, gzip: bool):
        self.size, self.delay, self.noise, self.gzip = size, delay, noise, gzip
        self.count = 0

    def answer(self, path: str, accept_encoding: str) -> bytes:
        """The whole response (head and body) to a GET of `path`."""
        if path == "/__count":
            body = str(self.count).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        body = noise(path, self.size) if self.noise else page(path, self.size)
        # The esi scenario: /esi/N is /page/N's size as a shell whose menu
        # is a fragment (/frag/menu), the same for everyone; both opt in.
        esi = path.startswith("/esi/") or path.startswith("/frag/")
        if path.startswith("/esi/"):
            body = body.replace(b"<body>", b'<body><esi:include src="/frag/menu"/>', 1)[:self.size]
        elif path.startswith("/frag/"):
            body = b'<nav><a href="/">Datasets</a> <a href="/about/">About</a> <a href="/login/">Sign in</a></nav>'
        coded = self.gzip and "gzip" in accept_encoding
        if coded:
            # What Django's GZipMiddleware sends: level 6, no timestamp.
            body = gzip.compress(body, 6, mtime=0)
        head = ["HTTP/1.1 200 OK", "Server: origin.py", f"Date: {http_date()}"]
        if self.gzip:
            head.append("Vary: Accept-Encoding")
        if coded:
            head.append("Content-Encoding: gzip")
        head += [
            "Content-Type: text/html; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Cache-Control: public, max-age=3600",
            "X-Bigcache-TTL: 1h",
        ]
        if esi:
            head.append('Surrogate-Control: content="ESI/1.0"')
        # A validator clients can spell without having seen the page (the
        # mixed scenarios' conditional requests): the path, quoted.
        head.append(f'ETag: "{path}"')
        if path.startswith("/tagged/"):
            # The purge scenario's tag: one tag on every such page, and one
            # of its own.
            head.append(f"Surrogate-Key: bench-all page-{path[8:]}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# The most a request head may take; a longer one closes the connection.
HEAD_MAX = 64 * 1024


async def serve(origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """One client connection, kept alive as HTTP/1.1 keeps it. asyncio
    rather than http.server: at a few thousand misses a second the thread
    per connection and http.server's header parsing took a third of the
    core the origin shares with wrk."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                return
            method, path, version = parts
            fields = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    fields[name.strip().lower()] = value.strip()
            try:
                length = int(fields.get("content-length", "0") or 0)
            except ValueError:
                return
            if length:
                await reader.readexactly(length)
            # A chunked body is not read: the connection ends after the 501.
            if method != "GET" or "transfer-encoding" in fields:
                writer.write(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            if path != "/__count":
                origin.count += 1
                if origin.delay:
                    await asyncio.sleep(origin.delay / 1000)
            writer.write(origin.answer(path, fields.get("accept-encoding", "")))
            await writer.drain()
            connection = {t.strip() for t in fields.get("connection", "").lower().split(",")}
            if "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection):
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        # A client that drops its connection (wrk stopping mid-request) is
        # no error worth a traceback in the bench's output.
        return
    finally:
        writer.close()


async def run(a):
    origin = Origin(a.size, a.delay, a.noise, a.gzip)
    server = await asyncio.start_server(
        lambda r, w: serve(origin, r, w), "127.0.0.1", a.port, limit=HEAD_MAX, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", type=int, default=20480)
    ap.add_argument("--delay", type=int, default=0, help="milliseconds")
    ap.add_argument("--noise", action="store_true", help="incompressible pages")
    ap.add_argument("--gzip", action="store_true", help="gzip for clients that accept it, as Django's GZipMiddleware")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
