#!/usr/bin/env python3
"""One keep-alive connection carrying traffic as it arrives: first the
misses (every page once), a conditional request and a credentialed one
(bypass) per page, and the pages again (hits); then a command (the
callgrind scenario zeroes its counters there); then --hits GETs cycling
over the pages on the same connection, plain or with a browser's headers
(--browser); then another command. Exits non-zero on any error status."""
import argparse
import socket
import subprocess
import sys
import time

BROWSER = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Cookie: _ga=GA1.1.1234567890.1700000000; _gid=GA1.1.987654321.1700000000\r\n"
    "Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nUpgrade-Insecure-Requests: 1\r\n"
)


class Closed(Exception):
    pass


class Conn:
    """Reconnects when the server closes between requests, as browsers
    do (nginx closes a client connection after keepalive_requests)."""

    def __init__(self, host, port):
        self.addr = (host, port)
        self.reconnects = 0
        self._open()

    def _open(self):
        self.s = socket.create_connection(self.addr)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self):
        chunk = self.s.recv(1 << 16)
        if not chunk:
            raise Closed()
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def get(self, path, fields=""):
        req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}\r\n".encode()
        try:
            self.s.sendall(req)
            first = self._line()
        except (Closed, ConnectionResetError, BrokenPipeError):
            if self.buf:
                raise SystemExit("connection closed mid-response")
            self.reconnects += 1
            self._open()
            self.s.sendall(req)
            first = self._line()
        status = int(first.split()[1])
        length, chunked = 0, False
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if status in (204, 304):
            return status
        if chunked:
            while True:
                size = int(self._line(), 16)
                if size == 0:
                    self._line()
                    break
                self._take(size + 2)
        else:
            self._take(length)
        return status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--hits", type=int, default=5000)
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--forwarded", action="store_true",
                    help="the fields nginx/bigcache.conf sets, as a trusted front sends them")
    ap.add_argument("--settle", type=float, default=0,
                    help="seconds to wait after the warm-up, then each page read once as the hits read it")
    ap.add_argument("--between", default="", help="shell command after the warm-up")
    ap.add_argument("--after", default="", help="shell command after the hits")
    a = ap.parse_args()
    front = ""
    if a.forwarded:
        front = ("X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: 127.0.0.1\r\n"
                 "X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Real-IP: 203.0.113.9\r\n")
    c = Conn("127.0.0.1", a.port)
    for i in range(a.pages):
        p = f"/page/{i}"
        if c.get(p, front) != 200:
            sys.exit(f"{p}: not a 200")
        if c.get(p, f'{front}If-None-Match: "{p}"\r\n') not in (200, 304):
            sys.exit(f"{p}: conditional failed")
        c.get(p, front + "Authorization: Basic eDp5\r\n")
        c.get(p, front + BROWSER)
    fields = front + (BROWSER if a.browser else "")
    if a.settle:
        # The server finishes what the warm-up started (bigcache encodes
        # each stored page in brotli), and each page's representation for
        # these hits is made once (a decoded copy for a client without br)
        # before the counting starts.
        time.sleep(a.settle)
        for i in range(a.pages):
            c.get(f"/page/{i}", fields)
    if a.between:
        subprocess.run(a.between, shell=True, check=False)
    for i in range(a.hits):
        if c.get(f"/page/{i % a.pages}", fields) != 200:
            sys.exit("a hit that is not a 200")
    if a.after:
        subprocess.run(a.after, shell=True, check=False)
    if c.reconnects:
        print(f"  ({c.reconnects} reconnects: the server closed idle-for-it connections)", file=sys.stderr)


if __name__ == "__main__":
    main()
