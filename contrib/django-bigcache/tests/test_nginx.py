"""Real nginx with the configs shipped in nginx/, in front of real bigcache
nodes in front of the example Django site. The configs are used as shipped:
only the lines marked CHANGE (ports, names, certificate, static root, node
addresses) are substituted, and a substitution that finds nothing fails the
test, so the configs and these tests cannot drift apart."""

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO, Site, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SITE_NAME = "www.example.org"
PROXY_ARGS = ["--host", SITE_NAME, "--trusted-proxy", "127.0.0.1/32"]


def substitute(text, old, new, count=1):
    found = len(re.findall(old, text, flags=re.M))
    assert found == count, f"the shipped config changed: {old!r} matched {found} times, expected {count}"
    return re.sub(old, new, text, flags=re.M)


class Nginx:
    """nginx from the distribution, run unprivileged on loopback ports with a
    site file from nginx/ inside a minimal http{} block, as Debian's
    nginx.conf includes sites-enabled/."""

    def __init__(self, shipped, upstreams):
        if not Path(NGINX).exists():
            raise RuntimeError("nginx is not installed (bash .ci/test.sh installs it)")
        self.dir = tempfile.mkdtemp(prefix="bigcache-nginx-")
        os.chmod(self.dir, 0o755)  # nginx's workers run as nobody
        self.http_port, self.https_port = free_port(), free_port()
        self.cert, key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", self.cert,
             "-days", "2", "-subj", f"/CN={SITE_NAME}", "-addext", f"subjectAltName=DNS:{SITE_NAME},DNS:example.org"],
            check=True, capture_output=True,
        )
        self.static = os.path.join(self.dir, "static")
        os.mkdir(self.static)
        with open(os.path.join(self.static, "site.css"), "w") as f:
            f.write("body { color: #123456 }\n")

        conf = (REPO / "nginx" / shipped).read_text()
        conf = substitute(conf, r"^\s*listen \[::\]:.*\n", "", count=4)
        conf = substitute(conf, r"listen 80;", f"listen 127.0.0.1:{self.http_port};")
        conf = substitute(conf, r"listen 80 default_server;", f"listen 127.0.0.1:{self.http_port} default_server;")
        conf = substitute(conf, r"listen 443 ssl http2;", f"listen 127.0.0.1:{self.https_port} ssl http2;")
        conf = substitute(conf, r"listen 443 ssl default_server;", f"listen 127.0.0.1:{self.https_port} ssl default_server;")
        conf = substitute(conf, r"/etc/letsencrypt/live/www.example.org/fullchain.pem", self.cert)
        conf = substitute(conf, r"/etc/letsencrypt/live/www.example.org/privkey.pem", key)
        conf = substitute(conf, r"/srv/www.example.org/static/", self.static + "/")
        conf = substitute(conf, r"/srv/www.example.org/media/", self.static + "/")
        shipped_servers = re.findall(r"^    server (?:\S+:8080\b|unix:[^;\s]+)", conf, flags=re.M)
        assert len(shipped_servers) == len(upstreams), shipped_servers
        for old, new in zip(shipped_servers, upstreams):
            # An address (http://host:port), or a Unix socket (unix:/path).
            conf = conf.replace(old, f"    server {new.split('//')[-1]}", 1)
        site = os.path.join(self.dir, "site.conf")
        with open(site, "w") as f:
            f.write(conf)
        temp = "\n".join(f"    {k}_temp_path {self.dir}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        main = os.path.join(self.dir, "nginx.conf")
        with open(main, "w") as f:
            f.write(f"""worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log {self.dir}/access.log;
{temp}
    include {site};
}}
""")
        self.proc = subprocess.Popen([NGINX, "-e", f"{self.dir}/error.log", "-p", self.dir, "-c", main, "-g", "daemon off;"])
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("nginx did not start: " + open(f"{self.dir}/error.log").read())
                time.sleep(0.05)

    def https(self, path, host=SITE_NAME, sni=None, headers=None, method="GET", raw=False):
        """One request over TLS to 127.0.0.1, with the given SNI name and
        ``Host``, checking the certificate as a browser would; the body as
        text, or with ``raw`` as the bytes sent."""
        ctx = ssl.create_default_context(cafile=self.cert)
        tcp = socket.create_connection(("127.0.0.1", self.https_port), timeout=30)
        conn = http.client.HTTPSConnection(host, context=ctx, timeout=30)
        conn.sock = ctx.wrap_socket(tcp, server_hostname=sni or host)
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            body = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body if raw else body.decode("utf-8", "replace")
        finally:
            conn.close()

    def http(self, path, host=SITE_NAME):
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        try:
            conn.request("GET", path, headers={"Host": host})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- one node: nginx/bigcache.conf ---------------------------------------


@pytest.fixture(scope="module")
def front():
    # The shipped config reaches bigcache over a Unix socket: in a directory
    # nginx's workers (nobody) can enter.
    sockets = tempfile.mkdtemp(prefix="bigcache-sock-")
    os.chmod(sockets, 0o755)
    sock = os.path.join(sockets, "proxy.sock")
    site = Site(bigcache_args=PROXY_ARGS, slow_seconds=0.2, proxy_listen=f"unix:{sock}")
    assert site.proxy == f"unix:{sock}", site.proxy
    nginx = Nginx("bigcache.conf", [site.proxy])
    yield site, nginx
    nginx.stop()
    site.stop()
    shutil.rmtree(sockets, ignore_errors=True)


def test_https_serves_and_caches_pages(front):
    site, nginx = front
    st, h, body = nginx.https("/dataset/1/")
    assert st == 200 and h["x-cache"] == "MISS" and "Dataset 1" in body
    st, h, again = nginx.https("/dataset/1/")
    assert st == 200 and h["x-cache"] == "HIT" and again == body
    assert site.renders("/dataset/1/") == 1
    st, h, body = nginx.https("/_seen/")
    seen = json.loads(body)
    assert seen["secure"] is True, "Django was not told the request came over HTTPS"
    assert seen["host"] == SITE_NAME


def test_plain_http_redirects_to_https(front):
    site, nginx = front
    st, h, _ = nginx.http("/dataset/2/?page=3")
    assert st == 301 and h["location"] == f"https://{SITE_NAME}/dataset/2/?page=3"
    assert site.renders("/dataset/2/?page=3") == 0


def test_static_files_come_from_nginx(front):
    site, nginx = front
    st, h, body = nginx.https("/static/site.css")
    assert st == 200 and body == "body { color: #123456 }\n"
    assert "x-cache" not in h, "a static file went through bigcache"
    assert h["content-type"] == "text/css"


def test_forged_forwarding_headers_do_not_reach_django(front):
    site, nginx = front
    forged = {
        "X-Forwarded-Host": "evil.example", "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "http",
        "X-Forwarded-Port": "6666", "X-Forwarded-Scheme": "http", "X-Forwarded-Server": "evil.example",
        "X-Forwarded-Prefix": "/evil", "Forwarded": "host=evil.example;proto=http", "X-Real-IP": "6.6.6.6",
    }
    st, h, body = nginx.https("/_seen/", headers=forged)
    seen = json.loads(body)
    assert seen["host"] == SITE_NAME and seen["secure"] is True
    # What nginx saw (the client is 127.0.0.1), with bigcache's own peer
    # (nginx, also 127.0.0.1) appended as a trusted proxy's hop; nothing
    # the client sent.
    assert seen["headers"] == {
        "X-Forwarded-Host": SITE_NAME, "X-Forwarded-For": "127.0.0.1, 127.0.0.1", "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": str(nginx.https_port), "X-Forwarded-Scheme": None, "X-Forwarded-Server": None,
        "X-Forwarded-Prefix": None, "Forwarded": None, "X-Real-IP": "127.0.0.1",
    }


def test_unknown_hosts_are_rejected(front):
    site, nginx = front
    # An unknown TLS server name, or none: nginx refuses the handshake
    # itself (the client checks no certificate here, so the refusal is
    # nginx's).
    for sni in ("evil.example", None):
        raw = socket.create_connection(("127.0.0.1", nginx.https_port), timeout=10)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            ctx.wrap_socket(raw, server_hostname=sni)
        raw.close()
    # The site's name in the handshake, another in Host, or in an
    # absolute-form target: the connection is closed unanswered.
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        nginx.https("/dataset/3/", sni=SITE_NAME, headers={"Host": "evil.example"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        nginx.https("http://evil.example/dataset/3/")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        nginx.http("/dataset/3/", host="evil.example")
    assert site.renders("/dataset/3/") == 0


def test_each_browser_gets_a_coding_it_takes_from_one_stored_copy(front):
    """bigcache keeps the page in brotli and sends it as stored to browsers;
    a client that takes only gzip gets nginx's gzip of the identity page,
    one that takes nothing the identity page: the same page each time."""
    import brotli
    import gzip

    site, nginx = front
    path = "/dataset/5/"
    st, h, identity = nginx.https(path, raw=True)
    assert st == 200 and h["x-cache"] == "MISS" and "content-encoding" not in h
    deadline = time.time() + 10
    while True:
        st, h, body = nginx.https(path, headers={"Accept-Encoding": "gzip, deflate, br, zstd"}, raw=True)
        if h.get("content-encoding") == "br" or time.time() > deadline:
            break
        time.sleep(0.05)  # the brotli copy is written after the first answer
    assert h["x-cache"] == "HIT" and h.get("content-encoding") == "br", h
    assert len(body) < len(identity) and brotli.decompress(body) == identity
    assert "accept-encoding" in h["vary"].lower()
    st, h, body = nginx.https(path, headers={"Accept-Encoding": "gzip, deflate"}, raw=True)
    assert h["x-cache"] == "HIT" and h.get("content-encoding") == "gzip", h
    assert gzip.decompress(body) == identity
    st, h, body = nginx.https(path, raw=True)
    assert h["x-cache"] == "HIT" and "content-encoding" not in h and body == identity
    assert site.renders(path) == 1


def test_the_rest_api_is_not_reachable_through_nginx(front):
    site, nginx = front
    nginx.https("/dataset/4/")
    st, _, _ = nginx.https("/cache/dataset/4/", method="DELETE")
    assert st == 404, "the request reached something other than Django"
    assert nginx.https("/stat")[0] == 404
    assert nginx.https("/dataset/4/")[1]["x-cache"] == "HIT"


# -- three nodes: nginx/cluster.conf ------------------------------------

PAGES = [f"/dataset/{i}/" for i in range(1, 301)]


class Cluster:
    """Three nodes behind nginx/cluster.conf, every page fetched once
    through it: ``first`` holds those answers, ``where`` maps each page to
    the node nginx sent it to while all were up."""

    def __init__(self):
        self.site = Site(nodes=3, bigcache_args=PROXY_ARGS, slow_seconds=0, datasets=len(PAGES))
        self.nginx = Nginx("cluster.conf", [c.proxy for c in self.site.caches])
        self.first = fetch_all(self.nginx, PAGES)
        self.where = owners(self.site)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.nginx.stop()
    c.site.stop()


def fetch_all(nginx, paths):
    with ThreadPoolExecutor(8) as pool:
        return dict(zip(paths, pool.map(nginx.https, paths)))


def owners(site):
    """path -> index of the node whose proxy was asked for it."""
    where = {}
    for i, node in enumerate(site.caches):
        for path in node.logged_paths():
            assert where.setdefault(path, i) == i, f"{path} went to nodes {where[path]} and {i}"
    return where


def test_a_cluster_shards_pages_and_survives_a_dead_node(cluster, capsys):
    site, nginx, where = cluster.site, cluster.nginx, cluster.where
    assert all(r[0] == 200 and r[1]["x-cache"] == "MISS" for r in cluster.first.values())
    assert sorted(where) == sorted(PAGES)
    counts = [node.count() for node in site.caches]
    assert sum(counts) == len(PAGES), counts
    for i, n in enumerate(counts):
        assert n == sum(1 for v in where.values() if v == i)
        assert 40 <= n <= 160, f"node {i} holds {n} of 300 pages: the hashing is lopsided"
    with capsys.disabled():
        print(f"\n  cluster: 300 pages over 3 nodes: {counts}")
    again = fetch_all(nginx, PAGES)
    assert all(r[1]["x-cache"] == "HIT" for r in again.values())

    # Node 1 dies: its pages are fetched again (once each, by the others);
    # nobody else's are.
    dead = site.caches[1]
    dead.kill()
    during = fetch_all(nginx, PAGES)
    assert all(r[0] == 200 for r in during.values())
    for path in PAGES:
        expected = 2 if where[path] == 1 else 1
        assert site.renders(path) == expected, f"{path} (node {where[path]}) rendered {site.renders(path)} times"
        assert during[path][1]["x-cache"] == ("MISS" if where[path] == 1 else "HIT")

    # It comes back with its data: once nginx tries it again (fail_timeout),
    # its pages are its hits again, not fetched a third time.
    dead.start()
    mine = [p for p in PAGES if where[p] == 1]
    wait_until_nginx_uses(nginx, dead, mine[0])
    before = dead.stat()["proxy"]["hit"]
    back = fetch_all(nginx, mine)
    assert all(r[1]["x-cache"] == "HIT" for r in back.values())
    assert dead.stat()["proxy"]["hit"] == before + len(mine)
    assert all(site.renders(p) == 2 for p in mine)


def wait_until_nginx_uses(nginx, node, page):
    """After a restart nginx tries the node again once fail_timeout is over."""
    before, deadline = node.stat()["proxy"], time.time() + 30
    while node.stat()["proxy"] == before:
        assert time.time() < deadline, "nginx never went back to the restarted node"
        nginx.https(page)
        time.sleep(0.5)


def test_a_cluster_purge_reaches_every_node(cluster):
    site, nginx, where = cluster.site, cluster.nginx, cluster.where
    # A page of node 1 that the node standing in for it also stored while
    # node 1 was down: a purge that missed that copy would serve the old
    # title the next time node 1 is down.
    page = next(p for p in PAGES if where[p] == 1)
    pk = page.split("/")[2]
    node1 = site.caches[1]
    node1.kill()
    nginx.https(page)
    node1.start()
    wait_until_nginx_uses(nginx, node1, page)
    copies = sum(1 for node in site.caches if page in node.logged_paths())
    assert copies == 2, "the page is not on two nodes"
    # A save in another process: post_save purges on every node.
    site.manage("shell", "-c", "from datasets.models import Dataset; d = Dataset.objects.get(pk=%s); "
                "d.title = 'Renamed in the cluster'; d.save()" % pk)
    st, h, body = nginx.https(page)
    assert h["x-cache"] == "MISS" and "Renamed in the cluster" in body

    other = next(p for p in PAGES if where[p] == 0)
    assert nginx.https(other)[1]["x-cache"] == "HIT"
    node1.kill()
    try:
        st, h, body = nginx.https(page)
        assert st == 200 and "Renamed in the cluster" in body, "the stand-in node served a purged copy"
        # From a shell, with a node down: the others are purged, the down one named.
        r = site.manage("bigcache_purge", other, check=False)
        assert r.returncode == 1, r
        assert "purged 1 entries on 2/3 nodes" in r.stdout
        assert node1.api in r.stderr, r.stderr
    finally:
        node1.start()
    assert nginx.https(other)[1]["x-cache"] == "MISS"
    r = site.manage("bigcache_purge", "--prefix", "/dataset/", check=False)
    assert r.returncode == 0 and "on 3/3 nodes" in r.stdout, r
    assert sum(node.count() for node in site.caches) == 0


# -- the local trial and Debian's own nginx.conf ----------------------------


def make_cert(directory, name):
    cert, key = os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True)
    return cert, key


def test_the_local_trial_config_serves_and_caches(tmp_path):
    """nginx/local.conf as its header says to use it: a self-signed
    certificate for localhost, bigcache on its default TCP proxy port
    (here a free one), HTTPS on 127.0.0.1:8443 (here a free one)."""
    directory = tempfile.mkdtemp(prefix="bigcache-nginx-local-")
    os.chmod(directory, 0o755)
    site = Site(bigcache_args=["--trusted-proxy", "127.0.0.1/32"], slow_seconds=0.2)
    proc = None
    try:
        cert, key = make_cert(directory, "localhost")
        port = free_port()
        conf = (REPO / "nginx" / "local.conf").read_text()
        conf = substitute(conf, r"listen 127\.0\.0\.1:8443 ssl;", f"listen 127.0.0.1:{port} ssl;")
        conf = substitute(conf, r"^    server 127\.0\.0\.1:8080;", f"    server {site.proxy.split('//')[-1]};")
        conf = substitute(conf, r"/etc/nginx/bigcache-local\.crt;", f"{cert};")
        conf = substitute(conf, r"/etc/nginx/bigcache-local\.key;", f"{key};")
        listens = re.findall(r"^\s*listen .*;", conf, flags=re.M)
        assert listens == [f"    listen 127.0.0.1:{port} ssl;"], listens
        with open(os.path.join(directory, "site.conf"), "w") as f:
            f.write(conf)
        temp = "\n".join(f"    {k}_temp_path {directory}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        main = os.path.join(directory, "nginx.conf")
        with open(main, "w") as f:
            f.write(f"""worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
{temp}
    include {directory}/site.conf;
}}
""")
        proc = subprocess.Popen([NGINX, "-e", f"{directory}/error.log", "-p", directory, "-c", main,
                                 "-g", "daemon off;"])
        ctx = ssl.create_default_context(cafile=cert)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, open(f"{directory}/error.log").read()
                time.sleep(0.05)

        def get(path):
            conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                return r.status, r.getheader("X-Cache"), r.read()
            finally:
                conn.close()

        st, cache, body = get("/dataset/4/")
        assert st == 200 and cache == "MISS" and b"Dataset 4" in body
        st, cache, again = get("/dataset/4/")
        assert st == 200 and cache == "HIT" and again == body
        assert site.renders("/dataset/4/") == 1
        assert json.loads(get("/_seen/")[2])["secure"] is True
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
        site.stop()
        shutil.rmtree(directory, ignore_errors=True)


def debian_nginx_copy(tmp_path):
    """Debian's /etc/nginx, copied, its own paths pointed at the copy:
    what `cp nginx/... /etc/nginx/sites-enabled/` then `nginx -t` sees on
    a stock Debian nginx."""
    if not Path("/etc/nginx/nginx.conf").exists() or not Path("/etc/nginx/sites-enabled/default").exists():
        pytest.skip("not Debian's nginx layout")
    etc = tmp_path / "nginx"
    shutil.copytree("/etc/nginx", etc, symlinks=False)
    main = etc / "nginx.conf"
    main.write_text(main.read_text().replace("/etc/nginx/", f"{etc}/"))
    return etc


def nginx_t(etc):
    return subprocess.run([NGINX, "-t", "-q", "-c", str(etc / "nginx.conf")], capture_output=True, text=True)


def test_the_one_node_quick_start_passes_nginx_t_on_a_stock_debian_nginx(tmp_path):
    """nginx/README.md's "One node" steps on Debian's own nginx.conf: with
    Debian's default site still enabled the two catch-alls collide (why the
    README removes it); with it removed, `nginx -t` passes."""
    etc = debian_nginx_copy(tmp_path)
    cert, key = make_cert(str(tmp_path), SITE_NAME)
    conf = (REPO / "nginx" / "bigcache.conf").read_text()
    conf = substitute(conf, r"/etc/letsencrypt/live/www.example.org/fullchain.pem", cert)
    conf = substitute(conf, r"/etc/letsencrypt/live/www.example.org/privkey.pem", key)
    (etc / "sites-enabled" / "bigcache.conf").write_text(conf)
    collided = nginx_t(etc)
    assert collided.returncode != 0 and "duplicate default server" in collided.stderr, collided.stderr
    steps = (REPO / "nginx" / "README.md").read_text()
    assert "rm /etc/nginx/sites-enabled/default" in steps, "the README no longer says to remove it"
    (etc / "sites-enabled" / "default").unlink()
    ok = nginx_t(etc)
    assert ok.returncode == 0, ok.stderr


def test_the_local_trial_passes_nginx_t_beside_debians_default_site(tmp_path):
    etc = debian_nginx_copy(tmp_path)
    cert, key = make_cert(str(tmp_path), "localhost")
    conf = (REPO / "nginx" / "local.conf").read_text()
    conf = substitute(conf, r"/etc/nginx/bigcache-local\.crt;", f"{cert};")
    conf = substitute(conf, r"/etc/nginx/bigcache-local\.key;", f"{key};")
    (etc / "sites-enabled" / "bigcache-local.conf").write_text(conf)
    assert (etc / "sites-enabled" / "default").exists()
    ok = nginx_t(etc)
    assert ok.returncode == 0, ok.stderr
