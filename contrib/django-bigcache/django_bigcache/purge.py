"""Purging pages the bigcache proxy has cached, e.g. when a model changes:

    from django.db.models.signals import post_save, post_delete
    from django.dispatch import receiver
    from django_bigcache import purge_path, purge_prefix, purge_tags

    @receiver([post_save, post_delete], sender=Dataset)
    def purge_dataset(sender, instance, **kwargs):
        purge_tags(f"dataset-{instance.pk}")           # every page tagged with it
        purge_path(instance.get_absolute_url())        # every variant of that page
        purge_prefix(f"/datasets/{instance.pk}/")      # and every page under it

Paths are as Django gives them (``request.get_full_path()``,
``get_absolute_url()``), query strings included. Tags are those views gave
their pages (``bigcache_page(..., tags=...)``, ``add_tags``). ``soft=True``
marks the pages stale instead of deleting them: visitors get the old copy
at once while one request refreshes it (``warm=True``: bigcache refreshes
them at once, without waiting for a visitor). With several nodes
(``BIGCACHE["LOCATION"]`` a list) every purge goes to all of them in
parallel: nginx places a page on one node, but while that node was down the
next one on the ring served and stored it too. A node that cannot be reached
is logged at WARNING and counted in ``node_failures``; the purge still
reaches the others. Failures never raise: a purge must not break the save
that triggered it.
"""

import collections
import json
from dataclasses import dataclass, field

from .client import Unavailable, as_nodes, log
from .tags import check_tag

#: Most paths, prefixes and tags one ``POST /purge`` takes.
MAX_ITEMS = 1000

#: Purges that did not reach a node, by node location, since the process
#: started.
node_failures = collections.Counter()


@dataclass
class PurgeResult:
    """What one purge call did across the nodes."""

    #: Entries removed, all nodes together (for a path: the nodes that had it).
    count: int = 0
    #: Locations of the nodes that could not be reached (or failed, 5xx).
    failed: list = field(default_factory=list)
    #: ``(location, what it said)`` of the nodes that answered and refused
    #: the purge (a 4xx): reached, but nothing was purged there.
    refused: list = field(default_factory=list)
    #: ``(location, what it said)`` of the nodes that purged but could not
    #: re-warm (``warm=True``): the pages refresh at their next request.
    not_warmed: list = field(default_factory=list)
    #: Nodes asked.
    nodes: int = 0

    @property
    def complete(self):
        """Every node answered and purged."""
        return not self.failed and not self.refused


def purge(paths=(), prefixes=(), tags=(), soft=False, warm=False, client=None):
    """Purges pages by exact path (every variant), by path prefix and by tag
    on every node; ``soft`` marks them stale instead, ``warm`` (with
    ``soft``) has bigcache refresh them at once. Returns a ``PurgeResult``;
    ``purge_path``, ``purge_prefix`` and ``purge_tags`` are the short forms."""
    if warm and not soft:
        raise ValueError("warm=True needs soft=True: only a soft purge keeps a page to refresh")
    nodes = as_nodes(client)
    everything = [("paths", x) for x in paths] + [("prefixes", x) for x in prefixes] + [("tags", x) for x in tags]
    if len(everything) > MAX_ITEMS:
        # The server takes at most MAX_ITEMS per call.
        result = PurgeResult(nodes=len(nodes.clients))
        for i in range(0, len(everything), MAX_ITEMS):
            chunk = everything[i : i + MAX_ITEMS]
            part = purge(
                [x for k, x in chunk if k == "paths"],
                [x for k, x in chunk if k == "prefixes"],
                [x for k, x in chunk if k == "tags"],
                soft=soft,
                warm=warm,
                client=client,
            )
            result.count += part.count
            result.failed.extend(f for f in part.failed if f not in result.failed)
            result.refused.extend(r for r in part.refused if r not in result.refused)
            result.not_warmed.extend(w for w in part.not_warmed if w not in result.not_warmed)
        return result

    request = {"paths": list(paths), "prefixes": list(prefixes), "tags": list(tags)}
    if soft:
        request["soft"] = True
    if warm:
        request["warm"] = True
    body = json.dumps(request).encode()
    items = [x for _, x in everything]

    def on_node(c):
        # One POST /purge per node for every item.
        r = c.request("POST", f"{c.base}/purge", body=body, headers={"Content-Type": "application/json"})
        if 400 <= r.status < 500:
            # Answered: the node is there and said no.
            return _Refused(f"HTTP {r.status}: {_said(r.data)}")
        if r.status != 200:
            raise Unavailable(f"POST /purge: HTTP {r.status} {r.data[:200]!r}")
        try:
            answer = json.loads(r.data)
            n = answer["purged"]
        except (ValueError, KeyError, TypeError):
            n = None
        if not isinstance(n, int):
            raise Unavailable(f"POST /purge: not bigcache's answer: {r.data[:200]!r}")
        return n, answer.get("warm_error")

    result = PurgeResult(nodes=len(nodes.clients))
    for c, outcome in nodes.each(on_node):
        if isinstance(outcome, Unavailable):
            node_failures[c.base] += 1
            result.failed.append(c.base)
            log.warning("bigcache purge of %s on %s failed: %s", items[:10], c.base, outcome)
        elif isinstance(outcome, _Refused):
            result.refused.append((c.base, outcome.said))
            log.warning("bigcache purge of %s refused by %s: %s", items[:10], c.base, outcome.said)
        else:
            n, warm_error = outcome
            result.count += n
            if warm_error:
                result.not_warmed.append((c.base, warm_error))
                log.warning("bigcache purge of %s on %s: %s", items[:10], c.base, warm_error)
    return result


@dataclass
class _Refused:
    """A node's 4xx answer to a purge."""

    said: str


def _said(data):
    """The ``detail`` of bigcache's JSON error, else the start of the body."""
    try:
        return str(json.loads(data)["detail"])
    except (ValueError, KeyError, TypeError):
        return repr(data[:200])


def purge_path(path, soft=False, client=None):
    """Drops the cached page at ``path`` (all its Vary variants), or with
    ``soft`` marks it stale. Returns whether a node had it."""
    return purge(paths=[path], soft=soft, client=client).count > 0


def purge_prefix(prefix, soft=False, client=None):
    """Drops (or, ``soft``, marks stale) every cached page whose path starts
    with ``prefix``. Returns the number reached, or ``None`` if no node
    purged (none could be reached, or every one refused)."""
    result = purge(prefixes=[prefix], soft=soft, client=client)
    return None if len(result.failed) + len(result.refused) == result.nodes else result.count


def purge_tags(*tags, soft=False, warm=False, client=None):
    """Drops (or, ``soft``, marks stale) every cached page tagged with any
    of ``tags``, every variant. Returns the number reached, or ``None`` if
    no node purged (none could be reached, or every one refused)."""
    for t in tags:
        check_tag(t)
    result = purge(tags=list(tags), soft=soft, warm=warm, client=client)
    return None if len(result.failed) + len(result.refused) == result.nodes else result.count
