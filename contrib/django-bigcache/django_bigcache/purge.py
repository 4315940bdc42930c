"""Purging pages the bigcache proxy has cached, e.g. when a model changes:

    from django.db.models.signals import post_save, post_delete
    from django.dispatch import receiver
    from django_bigcache import purge_path, purge_prefix

    @receiver([post_save, post_delete], sender=Dataset)
    def purge_dataset(sender, instance, **kwargs):
        purge_path(instance.get_absolute_url())        # every variant of that page
        purge_prefix(f"/datasets/{instance.pk}/")      # and every page under it

Paths are as Django gives them (``request.get_full_path()``,
``get_absolute_url()``), query strings included. Failures are logged and
reported as ``False``: a purge must never break the save that triggered it.
"""

import json

from .client import Unavailable, default_client, log


def purge_path(path, client=None):
    """Drops the cached page at ``path`` (all its Vary variants). Returns
    whether bigcache had it."""
    c = client or default_client()
    try:
        r = c.request("DELETE", c.url("cache", path))
    except Unavailable as e:
        log.warning("bigcache purge of %s failed: %s", path, e)
        return False
    return r.status == 200


def purge_prefix(prefix, client=None):
    """Drops every cached page whose path starts with ``prefix``. Returns
    the number bigcache reported, or ``None`` if it could not be reached."""
    c = client or default_client()
    try:
        r = c.request("DELETE", c.url("prefix", prefix))
    except Unavailable as e:
        log.warning("bigcache purge of prefix %s failed: %s", prefix, e)
        return None
    if r.status != 200:
        return 0
    count = json.loads(r.data).get("count", 0)
    return count if isinstance(count, int) else 0
