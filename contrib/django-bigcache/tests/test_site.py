"""End to end: a real Django site under gunicorn, bigcache in front, real
HTTP clients. Render counts come from the Django app itself."""

import http.client
import subprocess
import sys
import time
import urllib.parse

import pytest

from conftest import SITE


def fetch(base, path, method="GET", headers=None, body=None):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read().decode("utf-8", "replace")
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def test_slow_page_miss_then_hit(site, capsys):
    t = time.perf_counter()
    st, h, cold_body = fetch(site.proxy, "/dataset/1/")
    cold = time.perf_counter() - t
    assert st == 200 and h["x-cache"] == "MISS"
    assert "Dataset 1" in cold_body
    assert "x-bigcache-ttl" not in h
    t = time.perf_counter()
    st, h, body = fetch(site.proxy, "/dataset/1/")
    hit = time.perf_counter() - t
    assert st == 200 and h["x-cache"] == "HIT" and body == cold_body
    assert site.renders("/dataset/1/") == 1, "the hit reached Django"
    with capsys.disabled():
        print(f"\n  slow page: cold {cold * 1000:.0f} ms (Django render), bigcache hit {hit * 1000:.2f} ms")


def test_query_variants_are_cached_apart(site):
    a = fetch(site.proxy, "/datasets/?page=1")
    b = fetch(site.proxy, "/datasets/?page=2")
    assert a[1]["x-cache"] == b[1]["x-cache"] == "MISS"
    assert a[2] != b[2]
    assert fetch(site.proxy, "/datasets/?page=2")[1]["x-cache"] == "HIT"
    assert site.renders("/datasets/?page=1") == 1
    assert site.renders("/datasets/?page=2") == 1


def login_cookie(site, user):
    st, h, _ = fetch(site.django, f"/test-login/{user}/")
    assert st == 200
    cookie = h["set-cookie"]
    return cookie.split(";")[0]


def test_logged_in_page_never_cached_or_leaked(site):
    cookie = login_cookie(site, "alice")
    st, h, body = fetch(site.proxy, "/me/", headers={"Cookie": cookie})
    assert "hello alice" in body and h["x-cache"] == "BYPASS"
    st, h, body = fetch(site.proxy, "/me/")
    assert "hello anonymous" in body, "an anonymous visitor got alice's page"
    assert h["x-cache"] == "MISS"
    st, h, body = fetch(site.proxy, "/me/")
    assert "hello anonymous" in body and h["x-cache"] == "HIT"
    st, h, body = fetch(site.proxy, "/me/", headers={"Cookie": cookie})
    assert "hello alice" in body and h["x-cache"] == "BYPASS", "alice got the anonymous copy"


def test_cookie_setting_page_is_not_cached(site):
    for _ in range(2):
        st, h, _ = fetch(site.proxy, "/cookie/")
        assert st == 200 and h["x-cache"] == "MISS" and "visited=yes" in h["set-cookie"]
    assert site.renders("/cookie/") == 2


def test_csrf_form_is_not_cached_and_posting_it_purges(site):
    st, h, body = fetch(site.proxy, "/form/")
    assert "csrfmiddlewaretoken" in body and "csrftoken" in h.get("set-cookie", "")
    st, h, _ = fetch(site.proxy, "/form/")
    assert h["x-cache"] == "MISS"
    fetch(site.proxy, "/dataset/5/")
    assert fetch(site.proxy, "/dataset/5/")[1]["x-cache"] == "HIT"
    # Post the form through the proxy with its CSRF token.
    st, h, body = fetch(site.proxy, "/form/")
    token = body.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    cookie = h["set-cookie"].split(";")[0]
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "pk": 5, "title": "Renamed five"})
    st, h, _ = fetch(site.proxy, "/form/", method="POST", body=form, headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded",
        "Referer": site.proxy + "/form/",
    })
    assert st == 302, st
    st, h, body = fetch(site.proxy, "/dataset/5/")
    assert h["x-cache"] == "MISS" and "Renamed five" in body


def test_saving_a_model_purges_its_page(site):
    fetch(site.proxy, "/dataset/7/")
    fetch(site.proxy, "/datasets/?page=1")
    assert fetch(site.proxy, "/dataset/7/")[1]["x-cache"] == "HIT"
    before = site.renders("/dataset/7/")
    # A save elsewhere (admin, a cron job): only the post_save signal can purge.
    subprocess.run([sys.executable, str(SITE / "manage.py"), "shell", "-c",
                    "from datasets.models import Dataset; d = Dataset.objects.get(pk=7); "
                    "d.title = 'Updated seven'; d.save()"],
                   env=site.env, cwd=SITE, check=True)
    st, h, body = fetch(site.proxy, "/dataset/7/")
    assert h["x-cache"] == "MISS" and "Updated seven" in body
    assert site.renders("/dataset/7/") == before + 1
    assert fetch(site.proxy, "/datasets/?page=1")[1]["x-cache"] == "MISS", "list pages purged by prefix"


def test_cache_page_with_bigcache_as_default_cache(site):
    a = fetch(site.django, "/django-cached/")
    b = fetch(site.django, "/django-cached/")
    assert a[0] == b[0] == 200
    assert a[2] == b[2], "cache_page did not serve its stored response"
    assert site.renders("/django-cached/") == 1


def test_async_view_is_marked_and_cached(site):
    st, h, body = fetch(site.proxy, "/async-dataset/3/")
    assert st == 200 and h["x-cache"] == "MISS" and "async render 1" in body
    assert "x-bigcache-ttl" not in h
    st, h, again = fetch(site.proxy, "/async-dataset/3/")
    assert h["x-cache"] == "HIT" and again == body
    # Django itself renders it again each time it is asked (the counter is
    # the backend's atomic aincr): only the proxy cached it.
    assert "async render 2" in fetch(site.django, "/async-dataset/3/")[2]
