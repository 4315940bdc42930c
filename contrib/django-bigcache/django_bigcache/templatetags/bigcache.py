"""``{% load bigcache %}``: ``{% bigcache_fragment "name" key=value %}``
and ``{% bigcache_csrf_token %}`` (see ``django_bigcache.esi``)."""

from django import template

from .. import esi

register = template.Library()


@register.simple_tag(takes_context=True)
def bigcache_fragment(context, name, **params):
    """Fragment ``name`` (registered with ``@fragment``), with ``params``
    as its query: an ESI include through bigcache, rendered in place
    otherwise."""
    return esi.include(context, name, **params)


@register.simple_tag(takes_context=True)
def bigcache_csrf_token(context):
    """``{% csrf_token %}`` for a form on a cached page: the visitor's own
    token, from a fragment."""
    return esi.include(context, "csrf")
