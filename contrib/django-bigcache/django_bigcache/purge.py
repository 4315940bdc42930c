"""Purging pages the bigcache proxy has cached, e.g. when a model changes:

    from django.db.models.signals import post_save, post_delete
    from django.dispatch import receiver
    from django_bigcache import purge_path, purge_prefix

    @receiver([post_save, post_delete], sender=Dataset)
    def purge_dataset(sender, instance, **kwargs):
        purge_path(instance.get_absolute_url())        # every variant of that page
        purge_prefix(f"/datasets/{instance.pk}/")      # and every page under it

Paths are as Django gives them (``request.get_full_path()``,
``get_absolute_url()``), query strings included. With several nodes
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

#: Purges that did not reach a node, by node location, since the process
#: started.
node_failures = collections.Counter()


@dataclass
class PurgeResult:
    """What one purge call did across the nodes."""

    #: Entries removed, all nodes together (for a path: the nodes that had it).
    count: int = 0
    #: Locations of the nodes that could not be reached.
    failed: list = field(default_factory=list)
    #: Nodes asked.
    nodes: int = 0

    @property
    def complete(self):
        """Every node answered."""
        return not self.failed


def purge(paths=(), prefixes=(), client=None):
    """Purges pages by exact path (every variant) and by path prefix on every
    node. Returns a ``PurgeResult``; ``purge_path`` and ``purge_prefix`` are
    the one-item forms."""
    nodes = as_nodes(client)
    items = [("cache", p) for p in paths] + [("prefix", p) for p in prefixes]

    def on_node(c):
        removed = 0
        for route, target in items:
            r = c.request("DELETE", c.url(route, target))
            if r.status == 404:  # nothing there
                continue
            if r.status != 200:
                raise Unavailable(f"DELETE /{route}/{target}: HTTP {r.status} {r.data[:200]!r}")
            if route == "cache":
                removed += 1
                continue
            try:
                n = json.loads(r.data)["count"]
            except (ValueError, KeyError, TypeError):
                n = None
            if not isinstance(n, int):
                raise Unavailable(f"DELETE /{route}/{target}: not bigcache's answer: {r.data[:200]!r}")
            removed += n
        return removed

    result = PurgeResult(nodes=len(nodes.clients))
    for c, outcome in nodes.each(on_node):
        if isinstance(outcome, Unavailable):
            node_failures[c.base] += 1
            result.failed.append(c.base)
            log.warning("bigcache purge of %s on %s failed: %s", [t for _, t in items], c.base, outcome)
        else:
            result.count += outcome
    return result


def purge_path(path, client=None):
    """Drops the cached page at ``path`` (all its Vary variants). Returns
    whether a node had it."""
    return purge(paths=[path], client=client).count > 0


def purge_prefix(prefix, client=None):
    """Drops every cached page whose path starts with ``prefix``. Returns
    the number removed, or ``None`` if no node could be reached."""
    result = purge(prefixes=[prefix], client=client)
    return None if len(result.failed) == result.nodes else result.count
