"""Cached pages for logged-in users: a page is a shell shared by everyone,
with the parts that differ per visitor as fragments the bigcache proxy
fills in (Edge Side Includes).

    # urls.py
    path("_fragments/", include("django_bigcache.urls")),

    # views.py
    from django_bigcache.esi import fragment

    @fragment("user-menu")
    def user_menu(request):
        return render_to_string("menu.html", {"user": request.user})

    @bigcache_page("28d", esi=True)
    def dataset(request, pk): ...

    {# dataset.html #}
    {% load bigcache %}
    {% bigcache_fragment "user-menu" %}
    <form method="post">{% bigcache_csrf_token %}...</form>

Through bigcache (which says so in ``Surrogate-Capability``) the tag writes
an ``<esi:include>`` and the shell is marked ``Surrogate-Control:
content="ESI/1.0"``; bigcache stores the shell once and fetches each
fragment with the visitor's own request. Without bigcache (development)
the tag renders the fragment in place for the visitor.

``esi=True`` renders the shell as an anonymous request (no session, no
user, no cookies, no CSRF token), so nothing of one visitor can end up in
the page every visitor is served. A shell that used the CSRF token anyway
(``{% csrf_token %}``) is not cached at all, and logged: use
``{% bigcache_csrf_token %}``, a fragment, instead.
"""

import contextlib
import copy
import inspect
import logging
from importlib import import_module
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpResponse
from django.middleware.csrf import get_token
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe

log = logging.getLogger("django_bigcache")

ESI_CONTROL = 'content="ESI/1.0"'
TTL_HEADER = "X-Bigcache-TTL"

_fragments = {}


def through_bigcache(request):
    """Whether ``request`` came through a bigcache proxy, which processes
    ESI. bigcache sets the field itself and drops any a client sends."""
    return "ESI/1.0" in request.META.get("HTTP_SURROGATE_CAPABILITY", "")


def visitor(request):
    """The visitor's own request behind an anonymous shell's copy."""
    return getattr(request, "_bigcache_visitor", request)


def anonymous(request):
    """A copy of ``request`` as an anonymous visitor's: no user, an empty
    session, no cookies, no credentials, no CSRF token, no flash messages,
    and the language from ``Accept-Language`` alone (the language cookie
    is not in the cache key, ``Accept-Language`` may be)."""
    from django.contrib.auth.models import AnonymousUser
    from django.utils import translation

    anon = copy.copy(request)
    anon.META = {
        k: v for k, v in request.META.items()
        if k not in ("HTTP_COOKIE", "HTTP_AUTHORIZATION", "REMOTE_USER",
                     "CSRF_COOKIE", "CSRF_COOKIE_NEEDS_UPDATE")
    }
    # Cached on the request by whoever read it first (a middleware).
    anon.__dict__.pop("headers", None)
    anon.COOKIES = {}
    if hasattr(request, "_messages"):
        anon._messages = _NoMessages(anon)
    if hasattr(request, "LANGUAGE_CODE"):
        anon.LANGUAGE_CODE = translation.get_language_from_request(anon)
    anon.user = AnonymousUser()

    async def auser():
        return AnonymousUser()

    anon.auser = auser
    anon.session = import_module(settings.SESSION_ENGINE).SessionStore()
    anon._bigcache_visitor = request
    return anon


class _NoMessages:
    """Message storage with nothing in it, for a shell."""

    def __init__(self, request):
        self.request = request
        self.used = False
        self.level = 0

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __contains__(self, item):
        return False

    def add(self, level, message, extra_tags=""):
        pass

    def update(self, response):
        pass


def translation_override(anon):
    """The anonymous copy's language active while it renders."""
    from django.utils import translation

    return translation.override(getattr(anon, "LANGUAGE_CODE", None) or translation.get_language())


def used_csrf_token(anon):
    """Whether the shell rendered with ``anon`` put a CSRF token in itself."""
    return "CSRF_COOKIE" in anon.META or anon.META.get("CSRF_COOKIE_NEEDS_UPDATE")


def fragment(name, ttl=None):
    """Registers a fragment view under ``name``: called as ``view(request,
    **params)`` with the visitor's request and the tag's parameters, it
    returns the fragment's HTML (a string) or an ``HttpResponse``.

    ``ttl=None``: the fragment is the visitor's own (``Cache-Control:
    private``), rendered for each page view. With a ``ttl`` (``"1h"``) it
    is the same for everyone: rendered as anonymous, cached by bigcache and
    served to every visitor, logged in or not."""

    def register(view):
        _fragments[name] = (view, ttl)
        return view

    return register


def render_fragment(request, name, params):
    """The fragment ``name`` for ``request``: a response, unmarked. Of
    ``params`` only those the view names are passed (a fragment's URL is
    public: anyone can add to its query)."""
    try:
        view, ttl = _fragments[name]
    except KeyError:
        raise Http404(f"no bigcache fragment {name!r}")
    if ttl is not None:
        request = anonymous(request)
    named = list(inspect.signature(view).parameters.values())[1:]
    if any(p.kind == p.VAR_KEYWORD for p in named):
        kept = dict(params)
    else:
        kept = {p.name: params[p.name] for p in named
                if p.name in params and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [p.name for p in named if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in kept]
    if missing:
        raise Http404(f"bigcache fragment {name!r} needs {', '.join(missing)}")
    if ttl is not None:
        with_language = translation_override(request)
    else:
        with_language = contextlib.nullcontext()
    with with_language:
        out = view(request, **kept)
    response = out if isinstance(out, HttpResponse) else HttpResponse(out)
    return response, ttl, request


def fragment_view(request, name):
    """The view under the fragments' URL prefix (``django_bigcache.urls``)."""
    params = {k: v for k, v in request.GET.items()}
    response, ttl, rendered_with = render_fragment(request, name, params)
    if ttl is None or used_csrf_token(rendered_with) or response.status_code != 200:
        response["Cache-Control"] = "private, no-store"
    else:
        response[TTL_HEADER] = ttl
        # Rendered for everyone: bigcache may serve the stored copy to a
        # visitor with a session too.
        response["Surrogate-Control"] = ESI_CONTROL
    return response


def include(context, name, **params):
    """The markup for fragment ``name``: an include through bigcache, the
    fragment itself otherwise."""
    request = context.get("request")
    if request is None:
        raise ValueError("bigcache fragments need the request in the template context "
                         "(django.template.context_processors.request)")
    if through_bigcache(request):
        src = reverse("bigcache-fragment", args=[name])
        if params:
            src += "?" + urlencode(params)
        return mark_safe(f'<esi:include src="{escape(src)}" onerror="continue"/>')
    response, _, _ = render_fragment(visitor(request), name, params)
    return mark_safe(response.content.decode(response.charset or "utf-8"))


@fragment("csrf")
def csrf_input(request):
    """A form's CSRF field for the visitor (and their cookie, when new)."""
    return f'<input type="hidden" name="csrfmiddlewaretoken" value="{escape(get_token(request))}">'
