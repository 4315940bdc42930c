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


def test_a_page_cached_by_the_site_wide_rules(site):
    """``/about/`` has no decorator: ``BIGCACHE["PAGES"]`` and the
    middleware mark it, and the proxy keeps it."""
    st, h, body = fetch(site.proxy, "/about/")
    assert st == 200 and h["x-cache"] == "MISS" and "About" in body
    st, h, again = fetch(site.proxy, "/about/")
    assert st == 200 and h["x-cache"] == "HIT" and again == body
    assert site.renders("/about/") == 1
    # A path no rule names is left as the view made it.
    for _ in range(2):
        st, h, _ = fetch(site.proxy, "/_seen/")
        assert st == 200 and h["x-cache"] != "HIT"


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


def test_anonymous_visitors_with_cookies_share_a_page_that_reads_user(site):
    """/me/ reads request.user, so Django adds Vary: Cookie; returning
    visitors carry a csrftoken from an earlier form, analytics cookies and
    others. The connector tells bigcache the page was made from no cookie:
    one render for them all."""
    path = "/me/?shared=1"
    for i in range(5):
        st, h, body = fetch(site.proxy, path, headers={
            "Cookie": f"csrftoken={i:032d}; _ga=GA1.1.{i}; theme=t{i}"})
        assert st == 200 and "hello anonymous" in body
        assert h["x-cache"] == ("MISS" if i == 0 else "HIT"), (i, h)
        assert "Cookie" in h.get("vary", ""), "browsers still see Django's Vary"
        assert "x-bigcache-vary-cookies" not in h
    assert site.renders(path) == 1


def test_a_page_using_the_csrf_token_names_its_cookie(site):
    """Straight from Django: the form page names the CSRF cookie (and sets
    it, so bigcache stores it for nobody)."""
    st, h, body = fetch(site.django, "/form-marked/")
    assert st == 200 and "csrfmiddlewaretoken" in body
    assert h["x-bigcache-vary-cookies"] == "csrftoken"
    st, h, _ = fetch(site.django, "/me/")
    assert h["x-bigcache-vary-cookies"] == ""
    # Not asked (no cookies=): Django's Vary counts as sent.
    st, h, _ = fetch(site.django, "/dataset/1/")
    assert "x-bigcache-vary-cookies" not in h
    # The language cookie is named whenever a request carries it.
    st, h, _ = fetch(site.django, "/me/", headers={"Cookie": "django_language=de; _ga=1"})
    assert h["x-bigcache-vary-cookies"] == "django_language"
    # A session cookie is named whenever the request carries one, so a
    # proxy that does not know its name still stores the page for nobody.
    st, h, body = fetch(site.django, "/me/", headers={"Cookie": login_cookie(site, "bob")})
    assert "hello bob" in body and h["x-bigcache-vary-cookies"] == "sessionid"


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


def save_title(site, pk, title):
    """A save elsewhere (admin, a cron job): only the post_save signal can purge."""
    subprocess.run([sys.executable, str(SITE / "manage.py"), "shell", "-c",
                    f"from datasets.models import Dataset; d = Dataset.objects.get(pk={pk}); "
                    f"d.title = {title!r}; d.save()"],
                   env=site.env, cwd=SITE, check=True)


def test_saving_a_model_purges_its_pages_by_tag(site):
    """The recipe: pages tagged with the datasets they show, a save purging
    its dataset's tag. Its detail page and the list page showing it go;
    the list page not showing it stays."""
    for path in ("/dataset/7/", "/datasets/?page=1", "/datasets/?page=2", "/dataset/8/"):
        st, h, _ = fetch(site.proxy, path)
        assert st == 200 and "surrogate-key" not in h, h
        assert fetch(site.proxy, path)[1]["x-cache"] == "HIT", path
    before = site.renders("/dataset/7/")
    save_title(site, 7, "Updated seven")
    st, h, body = fetch(site.proxy, "/dataset/7/")
    assert h["x-cache"] == "MISS" and "Updated seven" in body
    assert site.renders("/dataset/7/") == before + 1
    st, h, body = fetch(site.proxy, "/datasets/?page=1")
    assert h["x-cache"] == "MISS" and "Updated seven" in body, "the list page showing it"
    assert fetch(site.proxy, "/datasets/?page=2")[1]["x-cache"] == "HIT", "a list page not showing it"
    assert fetch(site.proxy, "/dataset/8/")[1]["x-cache"] == "HIT", "another dataset's page"


def test_a_soft_purge_serves_the_old_page_while_it_is_refreshed(site):
    from django_bigcache import purge_tags
    from django_bigcache.client import Nodes

    fetch(site.proxy, "/dataset/9/")
    assert fetch(site.proxy, "/dataset/9/")[1]["x-cache"] == "HIT"
    renders = site.renders("/dataset/9/")
    # Renamed without the signal (a bulk update), then soft-purged by tag.
    subprocess.run([sys.executable, str(SITE / "manage.py"), "shell", "-c",
                    "from datasets.models import Dataset; "
                    "Dataset.objects.filter(pk=9).update(title='Quietly renamed nine')"],
                   env=site.env, cwd=SITE, check=True)
    # Its page, and any list page showing it that an earlier test cached.
    assert purge_tags("dataset-9", soft=True, client=Nodes.from_location(site.cache.api)) >= 1
    started = time.monotonic()
    st, h, body = fetch(site.proxy, "/dataset/9/")
    assert time.monotonic() - started < 1.0, "the visitor waited for the 1.5 s render"
    assert h["x-cache"] == "UPDATING" and "Quietly renamed nine" not in body
    deadline = time.monotonic() + 10
    while True:
        st, h, body = fetch(site.proxy, "/dataset/9/")
        if h["x-cache"] == "HIT":
            break
        assert time.monotonic() < deadline, "never refreshed"
        time.sleep(0.2)
    assert "Quietly renamed nine" in body
    assert site.renders("/dataset/9/") == renders + 1, "one render for the refresh"

    # warm: refreshed before anyone asks.
    subprocess.run([sys.executable, str(SITE / "manage.py"), "shell", "-c",
                    "from datasets.models import Dataset; "
                    "Dataset.objects.filter(pk=9).update(title='Warmed nine')"],
                   env=site.env, cwd=SITE, check=True)
    r = site.manage("bigcache_purge", "--tag", "dataset-9", "--soft", "--warm", check=False)
    assert r.returncode == 0, r
    deadline = time.monotonic() + 10
    while site.renders("/dataset/9/") < renders + 2:
        assert time.monotonic() < deadline, "never re-warmed"
        time.sleep(0.1)
    # The render takes 1.5 s; a visitor meanwhile shares it.
    while True:
        st, h, body = fetch(site.proxy, "/dataset/9/")
        if h["x-cache"] == "HIT":
            break
        assert h["x-cache"] == "UPDATING" and time.monotonic() < deadline, h["x-cache"]
        time.sleep(0.2)
    assert "Warmed nine" in body
    assert site.renders("/dataset/9/") == renders + 2, "the re-warm was the only render"


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
