#!/usr/bin/env python3
"""A fake Django for benchmarks: every GET returns an HTML-like page of
--size bytes after --delay ms, cacheable for an hour by bigcache
(X-Bigcache-TTL) and by nginx (Cache-Control). GET /__count returns how many
page requests it has answered."""
import argparse
import gzip
import random
import zlib
import http.server
import socket
import threading
import time

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


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle and
        # delayed ACKs add 40 ms to every keep-alive response.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        if self.path == "/__count":
            body = str(Handler.count).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with Handler.lock:
            Handler.count += 1
        if self.server.delay:
            time.sleep(self.server.delay / 1000)
        body = noise(self.path, self.server.size) if self.server.noise else page(self.path, self.server.size)
        # The esi scenario: /esi/N is /page/N's size as a shell whose menu
        # is a fragment (/frag/menu), the same for everyone; both opt in.
        esi = self.path.startswith("/esi/") or self.path.startswith("/frag/")
        if self.path.startswith("/esi/"):
            body = body.replace(b"<body>", b'<body><esi:include src="/frag/menu"/>', 1)[:self.server.size]
        elif self.path.startswith("/frag/"):
            body = b'<nav><a href="/">Datasets</a> <a href="/about/">About</a> <a href="/login/">Sign in</a></nav>'
        coded = self.server.gzip and "gzip" in self.headers.get("Accept-Encoding", "")
        if coded:
            # What Django's GZipMiddleware sends: level 6, no timestamp.
            body = gzip.compress(body, 6, mtime=0)
        self.send_response(200)
        if self.server.gzip:
            self.send_header("Vary", "Accept-Encoding")
        if coded:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=3600")
        self.send_header("X-Bigcache-TTL", "1h")
        if esi:
            self.send_header("Surrogate-Control", 'content="ESI/1.0"')
        # A validator clients can spell without having seen the page (the
        # mixed scenarios' conditional requests): the path, quoted.
        self.send_header("ETag", f'"{self.path}"')
        if self.path.startswith("/tagged/"):
            # The purge scenario's tag: one tag on every such page, and one
            # of its own.
            self.send_header("Surrogate-Key", f"bench-all page-{self.path[8:]}")
        self.end_headers()
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", type=int, default=20480)
    ap.add_argument("--delay", type=int, default=0, help="milliseconds")
    ap.add_argument("--noise", action="store_true", help="incompressible pages")
    ap.add_argument("--gzip", action="store_true", help="gzip for clients that accept it, as Django's GZipMiddleware")
    a = ap.parse_args()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    # A client that drops its connection (wrk stopping mid-request) is no
    # error worth a traceback in the bench's output.
    srv.handle_error = lambda request, client_address: None
    srv.daemon_threads = True
    srv.size, srv.delay, srv.noise, srv.gzip = a.size, a.delay, a.noise, a.gzip
    srv.serve_forever()


if __name__ == "__main__":
    main()
