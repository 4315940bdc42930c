"""How values become bytes on the server, chosen in ``OPTIONS``:

    "OPTIONS": {"SERIALIZER": "pickle",   # default; or "json", or a dotted path
                "COMPRESSOR": "zlib",     # default None; or "lzma", or a dotted path
                "COMPRESS_MIN_LENGTH": 1024}

A dotted path names an object (a module, a class, an instance) with
``dumps(value) -> bytes`` and ``loads(bytes) -> value`` for a serializer, or
``compress(bytes) -> bytes`` and ``decompress(bytes) -> bytes`` for a
compressor (``"lz4.frame"`` works as one once ``lz4`` is installed).

Integers (``type(v) is int``) are stored as their decimal text, whatever
the serializer, so the server can increment them atomically (``incr``), as
django-redis stores them. Pickles (protocol 2 and up) start with byte 0x80
and JSON numbers are integers only as text, so reading tells them apart.
"""

import importlib
import json
import lzma
import pickle
import re
import zlib

_INTEGER = re.compile(rb"-?[0-9]+")


class PickleSerializer:
    def dumps(self, value):
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def loads(self, data):
        return pickle.loads(data)


class JSONSerializer:
    """Values Django's JSON encoder can write (no ``HttpResponse``, so not
    for ``cache_page``); readable by any client of the REST API."""

    def dumps(self, value):
        from django.core.serializers.json import DjangoJSONEncoder

        return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":")).encode()

    def loads(self, data):
        return json.loads(data)


SERIALIZERS = {"pickle": PickleSerializer, "json": JSONSerializer}
COMPRESSORS = {"zlib": zlib, "lzma": lzma}


def _load(name, builtins, what):
    if not isinstance(name, str):
        return name
    if name in builtins:
        found = builtins[name]
    else:
        module, _, attr = name.rpartition(".")
        try:
            found = importlib.import_module(name)
        except ImportError:
            if not module:
                raise ValueError(f"bigcache {what} {name!r}: not one of {sorted(builtins)} nor a dotted path") from None
            found = getattr(importlib.import_module(module), attr)
    return found() if isinstance(found, type) else found


class Codec:
    """A serializer and an optional compressor: values to bytes and back."""

    def __init__(self, serializer="pickle", compressor=None, compress_min_length=1024):
        self.serializer = _load(serializer, SERIALIZERS, "SERIALIZER")
        self.compressor = _load(compressor, COMPRESSORS, "COMPRESSOR") if compressor else None
        self.min_length = compress_min_length

    def dumps(self, value):
        if type(value) is int:
            return str(value).encode()
        data = self.serializer.dumps(value)
        if self.compressor is not None and len(data) >= self.min_length:
            return self.compressor.compress(data)
        return data

    def loads(self, data):
        if _INTEGER.fullmatch(data):
            return int(data)
        if self.compressor is not None:
            try:
                data = self.compressor.decompress(data)
            except Exception:  # stored uncompressed (short, or before compression was on)
                pass
        return self.serializer.loads(data)
