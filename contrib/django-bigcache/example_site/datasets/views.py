import time

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils.html import escape
from django.views.decorators.cache import cache_page

from django_bigcache import add_tags, bigcache_page
from django_bigcache.esi import fragment

from .models import Dataset, RenderCount


@bigcache_page("28d", tags=lambda request, pk: [f"dataset-{pk}"])
def dataset(request, pk):
    """The slow page: what bigcache exists for. Tagged with its dataset, so
    saving the dataset purges it (`signals.py`)."""
    RenderCount.bump(request.get_full_path())
    time.sleep(settings.SLOW_SECONDS)
    ds = get_object_or_404(Dataset, pk=pk)
    # What a dataset page shows: a table of its rows (here made up from
    # its number), a few KB of HTML like the pages the proxy stores.
    rows = [(i, (pk * 7919 + i * 104729) % 100000 / 100, f"station-{(pk + i) % 37}") for i in range(1, 101)]
    return render(request, "datasets/dataset.html", {"dataset": ds, "rows": rows})


@bigcache_page("28d", tags=lambda request, pk: [f"dataset-{pk}"], esi=True)
def dataset_esi(request, pk):
    """The dataset page for everyone, logged in or not: the shell is
    rendered as anonymous and cached once; the user menu, the "saved" star
    and the form's CSRF field are fragments, each the visitor's own."""
    RenderCount.bump(request.get_full_path())
    time.sleep(settings.SLOW_SECONDS)
    ds = get_object_or_404(Dataset, pk=pk)
    rows = [(i, (pk * 7919 + i * 104729) % 100000 / 100, f"station-{(pk + i) % 37}") for i in range(1, 101)]
    return render(request, "datasets/dataset_esi.html", {"dataset": ds, "rows": rows})


@fragment("user-menu")
def user_menu(request):
    RenderCount.bump("fragment:user-menu")
    if request.user.is_authenticated:
        return f"<span>Signed in as {escape(request.user.username)}</span>"
    return '<a href="/login/">Sign in</a>'


@fragment("saved")
def saved(request, dataset):
    """Whether the visitor saved the dataset (here: users whose name has
    the dataset's number in it, a stand-in for a table of saves)."""
    RenderCount.bump("fragment:saved")
    mine = request.user.is_authenticated and str(dataset) in request.user.username
    return "<span>&#9733; saved</span>" if mine else "<span>&#9734;</span>"


@fragment("footer", ttl="1h")
def footer(request):
    """The same for everyone: cached by bigcache, a hit for every page."""
    RenderCount.bump("fragment:footer")
    return f"<p>{Dataset.objects.count()} datasets</p>"


@bigcache_page("1h")
def dataset_list(request):
    """Tagged with every dataset it shows, and as a list page: a save purges
    the list pages that show that dataset, and no others."""
    RenderCount.bump(request.get_full_path())
    page = int(request.GET.get("page", "1"))
    items = list(Dataset.objects.order_by("pk")[(page - 1) * 10 : page * 10])
    response = render(request, "datasets/list.html", {"items": items, "page": page})
    return add_tags(response, "dataset-list", *(f"dataset-{d.pk}" for d in items))


@bigcache_page("1h")
def cookie_page(request):
    """Sets a cookie: bigcache must not cache it, marked or not."""
    RenderCount.bump(request.get_full_path())
    response = HttpResponse("<p>cookie set</p>")
    response.set_cookie("visited", "yes")
    return response


@bigcache_page("1h", cookies=[])
def me(request):
    """Per-user content: anonymous visitors may share a copy, a logged-in
    user's never is. Made from no cookie but the session (which the
    connector names whenever a request carries it): anonymous visitors
    share it whatever cookies they carry."""
    RenderCount.bump(request.get_full_path())
    who = request.user.username if request.user.is_authenticated else "anonymous"
    return HttpResponse(f"<p>hello {who}</p>")


def form(request):
    """A form with a CSRF token (so a cookie): never cached. Posting it
    changes a dataset and redirects to its page."""
    RenderCount.bump(request.get_full_path())
    if request.method == "POST":
        ds = get_object_or_404(Dataset, pk=int(request.POST["pk"]))
        ds.title = request.POST["title"]
        ds.save()
        return HttpResponseRedirect(ds.get_absolute_url())
    return render(request, "datasets/form.html")


@bigcache_page("1h", cookies=[])
def form_marked(request):
    """The form page marked for bigcache: it names the CSRF cookie it was
    made from (and sets it, so it is stored for nobody)."""
    return render(request, "datasets/form.html")


@bigcache_page("1h")
async def async_dataset(request, pk):
    """An async view: the decorator marks it as it marks sync ones, and the
    backend's native async calls count its renders."""
    from django.core.cache import cache

    await cache.aadd(f"async-renders:{pk}", 0, timeout=None)
    n = await cache.aincr(f"async-renders:{pk}")
    ds = await Dataset.objects.aget(pk=pk)
    return HttpResponse(f"<p>{ds.title} (async render {n})</p>")


@cache_page(60)
def django_cached(request):
    """Django's own cache_page, with bigcache as CACHES['default']."""
    RenderCount.bump(request.path)
    return HttpResponse(f"<p>rendered at {time.time()}</p>")


def test_login(request, username):
    """Logs in as `username` (created on first use). For the example and its
    tests only: never put such a view in a real site."""
    user, _ = get_user_model().objects.get_or_create(username=username)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponse(f"logged in as {username}")


def seen(request):
    """What Django was told about the request, for the tests of what a
    client can and cannot make it believe. Never cached."""
    response = JsonResponse({
        "host": request.get_host(),
        "secure": request.is_secure(),
        "headers": {
            name: request.META.get("HTTP_" + name.upper().replace("-", "_"))
            for name in ("X-Forwarded-Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port",
                         "X-Forwarded-Scheme", "X-Forwarded-Server", "X-Forwarded-Prefix", "Forwarded", "X-Real-IP")
        },
    })
    response["Cache-Control"] = "no-store"
    return response


def renders(request):
    obj = RenderCount.objects.filter(path=request.GET.get("path", "")).first()
    return JsonResponse({"n": obj.n if obj else 0})


def about(request):
    """No decorator: cached for an hour by ``BigCacheMiddleware`` and the
    ``BIGCACHE["PAGES"]`` rule in settings, as a site caches its pages
    without touching each view."""
    RenderCount.bump(request.get_full_path())
    return HttpResponse("<!doctype html><title>About</title><h1>About these datasets</h1>" + "<p>x</p>" * 40)
