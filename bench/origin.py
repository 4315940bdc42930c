#!/usr/bin/env python3
"""A fake Django for benchmarks: every GET returns an HTML-like page of
--size bytes after --delay ms, cacheable for an hour by bigcache
(X-Bigcache-TTL) and by nginx (Cache-Control). GET /__count returns how many
page requests it has answered."""
import argparse
import http.server
import socket
import threading
import time

WORDS = ("dataset table column value annual report region population index "
         "series monthly survey statistics source license update download").split()


_rows = {}


def _table(size: int) -> str:
    """~size bytes of table rows, built once: generating 20 KB per request
    in Python would make the origin, not the caches, the bottleneck."""
    if size not in _rows:
        parts, n, i = [], 0, 0
        while n < size:
            w = WORDS[(i * 7) % len(WORDS)]
            row = f"<tr><td>{w}</td><td>{(i * 7919) % 100000}</td><td>{WORDS[i % 5]}</td></tr>\n"
            parts.append(row)
            n += len(row)
            i += 1
        _rows[size] = "".join(parts)
    return _rows[size]


def page(path: str, size: int) -> bytes:
    """An HTML-like page of `size` bytes whose head names `path` (so every
    page differs) and whose body compresses like real HTML tables."""
    head = f"<html><head><title>{path}</title></head><body><h1>{path}</h1><table>\n"
    return (head + _table(size)).encode()[:size]


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
        body = page(self.path, self.server.size)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=3600")
        self.send_header("X-Bigcache-TTL", "1h")
        self.end_headers()
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", type=int, default=20480)
    ap.add_argument("--delay", type=int, default=0, help="milliseconds")
    a = ap.parse_args()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.size, srv.delay = a.size, a.delay
    srv.serve_forever()


if __name__ == "__main__":
    main()
