"""Cache tags (surrogate keys): names a page is purged by.

A view gives its pages tags, and a save purges the tag instead of listing
every page that shows the object: the detail page, each list page it is on,
search results, feeds.

    @bigcache_page("28d", tags=lambda request, pk: [f"dataset-{pk}"])
    def dataset(request, pk): ...

    def dataset_list(request):
        response = render(...)
        return add_tags(response, "dataset-list", *(f"dataset-{d.pk}" for d in items))

bigcache reads them from the ``Surrogate-Key`` header, indexes them with
the page and removes the header before the page leaves it. A tag is 1 to
256 characters of visible ASCII other than ``,``; a page takes at most 128
(bigcache does not store a page over the limits, so this module refuses
them where the view can see why).
"""

HEADER = "Surrogate-Key"
MAX_TAG_LEN = 256
MAX_TAGS = 128


def check_tag(tag):
    """Raises ``ValueError`` for a tag bigcache would refuse."""
    if not isinstance(tag, str):
        raise ValueError(f"a tag is a str, not {type(tag).__name__}: {tag!r}")
    if not tag or len(tag) > MAX_TAG_LEN:
        raise ValueError(f"a tag is 1 to {MAX_TAG_LEN} characters: {tag[:40]!r}")
    if not all("!" <= ch <= "~" and ch != "," for ch in tag):
        raise ValueError(f"a tag is visible ASCII without spaces or commas: {tag!r}")


def add_tags(response, *tags):
    """Adds ``tags`` to the response's ``Surrogate-Key`` (keeping those it
    has, without repeats); returns the response."""
    for t in tags:
        check_tag(t)
    have = response.get(HEADER, "").split()
    merged = list(dict.fromkeys(have + list(tags)))
    if len(merged) > MAX_TAGS:
        raise ValueError(f"{len(merged)} tags on one page; bigcache takes at most {MAX_TAGS}")
    if merged:
        response[HEADER] = " ".join(merged)
    return response
