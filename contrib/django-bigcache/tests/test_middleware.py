"""``BigCacheMiddleware``: the site-wide rules, against Django's request
factory (the example site's end-to-end test runs them through the proxy)."""

import pytest
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


@override_settings(BIGCACHE={"PAGES": [(r"^/x/", 1.5)]})
def test_a_lifetime_that_is_not_a_duration_is_refused():
    with pytest.raises(TypeError):
        run("/x/")
