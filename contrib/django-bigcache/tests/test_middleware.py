"""``BigCacheMiddleware``: the site-wide rules, against Django's request
factory (the example site's end-to-end test runs them through the proxy)."""

from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from django_bigcache.middleware import BigCacheMiddleware

RULES = {"LOCATION": "http://127.0.0.1:36379",
         "PAGES": [(r"^/dataset/\d+/$", "28d"), (r"^/account/", None), (r"^/news/", 3600)]}


def run(path, method="GET", status=200, preset=None):
    def view(request):
        r = HttpResponse("page", status=status)
        if preset:
            r["X-Bigcache-TTL"] = preset
        return r
    request = getattr(RequestFactory(), method.lower())(path)
    return BigCacheMiddleware(view)(request)


@override_settings(BIGCACHE=RULES)
def test_the_first_matching_rule_gives_the_lifetime():
    assert run("/dataset/7/")["X-Bigcache-TTL"] == "28d"
    assert run("/news/today/")["X-Bigcache-TTL"] == "3600s"
    assert "X-Bigcache-TTL" not in run("/dataset/7/edit/"), "no rule, no default"
    assert "X-Bigcache-TTL" not in run("/account/dataset/7/"), "None: never marked"


@override_settings(BIGCACHE=RULES)
def test_only_successful_gets_and_heads_are_marked_and_a_view_wins():
    assert run("/dataset/7/", method="HEAD")["X-Bigcache-TTL"] == "28d"
    assert "X-Bigcache-TTL" not in run("/dataset/7/", method="POST")
    assert "X-Bigcache-TTL" not in run("/dataset/7/", status=404)
    assert "X-Bigcache-TTL" not in run("/dataset/7/", status=302)
    assert run("/dataset/7/", preset="5m")["X-Bigcache-TTL"] == "5m", "@bigcache_page's own wins"


def test_a_default_lifetime_covers_the_rest_and_settings_apply_at_once():
    with override_settings(BIGCACHE={**RULES, "DEFAULT_TTL": "1h"}):
        assert run("/anything/")["X-Bigcache-TTL"] == "1h"
        assert "X-Bigcache-TTL" not in run("/account/x/"), "a None rule still opts out"
    with override_settings(BIGCACHE={"LOCATION": "http://127.0.0.1:36379"}):
        assert "X-Bigcache-TTL" not in run("/dataset/7/"), "no rules: nothing marked"


def test_rules_that_cannot_work_mark_nothing_and_fail_no_page():
    for pages in [[(r"^/x/", 1.5)], {r"^/x/": "1h", r"^/y/": "2h"}, [(r"^/x/", "1 hour")], [(r"^/(", "1h")]]:
        with override_settings(BIGCACHE={"PAGES": pages}):
            r = run("/x/")
            assert r.status_code == 200 and "X-Bigcache-TTL" not in r, pages


class User:
    def __init__(self, authenticated):
        self.is_authenticated = authenticated


@override_settings(BIGCACHE={**RULES, "DEFAULT_TTL": "1h"})
def test_a_logged_in_users_page_is_never_marked():
    """A user another framework authenticated (a JWT cookie the proxy does
    not know as a session) or Django's own, once the page looked at it."""
    from django.utils.functional import SimpleLazyObject

    def view(request):
        return HttpResponse(f"hello {request.user.is_authenticated}")

    for user, marked in [(User(True), False), (User(False), True),
                         (SimpleLazyObject(lambda: User(True)), True)]:  # never looked at: not made from it
        request = RequestFactory().get("/dataset/7/")
        request.user = user
        r = BigCacheMiddleware(lambda req: HttpResponse("page"))(request)
        assert ("X-Bigcache-TTL" in r) is marked, user
    request = RequestFactory().get("/dataset/7/")
    request.user = SimpleLazyObject(lambda: User(True))
    r = BigCacheMiddleware(view)(request)
    assert "X-Bigcache-TTL" not in r, "a lazy user the view evaluated counts"


@override_settings(BIGCACHE=RULES)
def test_a_view_that_says_its_own_freshness_wins():
    def with_header(name, value):
        def view(request):
            r = HttpResponse("page")
            r[name] = value
            return r
        return BigCacheMiddleware(view)(RequestFactory().get("/dataset/7/"))

    for name, value in [("Cache-Control", "max-age=0"), ("Cache-Control", "public, s-maxage=60"),
                        ("Cache-Control", "no-cache"), ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")]:
        assert "X-Bigcache-TTL" not in with_header(name, value), (name, value)
    assert with_header("Cache-Control", "public")["X-Bigcache-TTL"] == "28d"


@override_settings(BIGCACHE=RULES)
def test_a_language_cookie_makes_the_page_vary_on_cookie():
    request = RequestFactory().get("/dataset/7/")
    request.COOKIES["django_language"] = "fr"
    r = BigCacheMiddleware(lambda req: HttpResponse("page"))(request)
    assert r["X-Bigcache-TTL"] == "28d" and "Cookie" in r["Vary"]
    assert "Vary" not in run("/dataset/7/")
