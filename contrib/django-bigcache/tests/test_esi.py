"""ESI end to end: the example site under gunicorn, bigcache in front, a
logged-in visitor served the cached shell with fragments of their own."""

import re
import time

from test_site import fetch, login_cookie

PAGE = "/esi/dataset/2/"


def test_logged_in_visitors_share_the_shell_and_get_their_own_fragments(site, capsys):
    st, h, anon = fetch(site.proxy, PAGE)
    assert st == 200 and h["x-cache"] == "MISS", h
    assert "Sign in" in anon and "&#9734;" in anon and "datasets</p>" in anon
    assert "<esi:" not in anon and "surrogate-control" not in h
    assert h["cache-control"] == "private, no-cache"
    assert "csrftoken=" in h.get("set-cookie", ""), "the CSRF fragment's cookie reaches the browser"
    assert site.renders(PAGE) == 1

    alice, bob = login_cookie(site, "alice2"), login_cookie(site, "bob")
    t = time.perf_counter()
    st, h, a = fetch(site.proxy, PAGE, headers={"Cookie": alice})
    esi_time = time.perf_counter() - t
    assert st == 200 and h["x-cache"] == "HIT", h
    assert "Signed in as alice2" in a and "&#9733; saved" in a
    st, h, b = fetch(site.proxy, PAGE, headers={"Cookie": bob})
    assert "Signed in as bob" in b and "alice" not in b and "&#9734;" in b
    assert site.renders(PAGE) == 1, "the shell was rendered once for everyone"
    assert site.renders("fragment:footer") == 1, "the shared fragment is a hit for all"

    # Today's alternative for a logged-in visitor: the full render.
    t = time.perf_counter()
    st, h, full = fetch(site.proxy, "/dataset/2/", headers={"Cookie": alice})
    bypass_time = time.perf_counter() - t
    assert h["x-cache"] == "BYPASS"
    assert esi_time < bypass_time
    with capsys.disabled():
        print(f"\n  logged-in page: ESI (shell cached) {esi_time * 1000:.0f} ms, "
              f"full render (bypass) {bypass_time * 1000:.0f} ms")


def test_a_form_on_a_cached_page_posts_with_the_visitors_token(site):
    st, h, page = fetch(site.proxy, PAGE)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    cookie = h["set-cookie"].split(";")[0]
    st, h, _ = fetch(site.proxy, "/form/", method="POST",
                     headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
                     body=f"csrfmiddlewaretoken={token}&pk=2&title=Renamed")
    assert st == 302, "Django took the token from the cached page's fragment"
    # Another visitor's page holds another token.
    _, _, other = fetch(site.proxy, PAGE)
    assert token not in other


def test_without_bigcache_the_fragments_render_in_place(site):
    st, h, body = fetch(site.django, PAGE, headers={"Cookie": login_cookie(site, "carol")})
    assert st == 200 and "<esi:" not in body
    assert "Signed in as carol" in body and "csrfmiddlewaretoken" in body
    assert "surrogate-control" not in h
    # Only bigcache's word counts: a client cannot ask for includes.
    st, h, body = fetch(site.proxy, "/_seen/", headers={"Surrogate-Capability": 'x="ESI/1.0"'})
    assert st == 200
