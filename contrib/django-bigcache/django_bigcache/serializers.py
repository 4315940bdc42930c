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
django-redis stores them. JSON numbers are integers only as text, so
reading tells them apart.

Every other value (unless the serializer is ``"json"``, whose loading
runs no code) is signed: it is stored as ``bcs1``, an HMAC-SHA256 keyed from
Django's ``SECRET_KEY`` (``salted_hmac``) of the cache key and the
serialized bytes, then the bytes, so a value moved to another key does not
verify either. A value whose
signature does not check (any process on the machine can write to a
loopback bigcache without a token) is never unpickled: it reads as a miss,
with a warning. ``SECRET_KEY_FALLBACKS`` still verify, so a rotated key
does not empty the cache at once. Values stored unsigned by earlier
releases read as misses. The built-in compressors refuse to expand a
value past ``MAX_DECOMPRESSED`` (an unsigned JSON value may be anyone's).
"""

import hmac
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


#: The most bytes a stored value decompresses to with the built-in
#: compressors: an unsigned (JSON) value may be anyone's, and a small
#: planted one must not expand into all of a worker's memory.
MAX_DECOMPRESSED = 256 << 20


class _Zlib:
    def compress(self, data):
        return zlib.compress(data)

    def decompress(self, data):
        d = zlib.decompressobj()
        out = d.decompress(data, MAX_DECOMPRESSED)
        if d.unconsumed_tail:
            raise ValueError(f"decompresses to more than {MAX_DECOMPRESSED} bytes")
        return out + d.flush()


class _Lzma:
    def compress(self, data):
        return lzma.compress(data)

    def decompress(self, data):
        d = lzma.LZMADecompressor()
        out = d.decompress(data, MAX_DECOMPRESSED)
        if not d.eof:
            raise ValueError(f"decompresses to more than {MAX_DECOMPRESSED} bytes, or is cut short")
        return out


SERIALIZERS = {"pickle": PickleSerializer, "json": JSONSerializer}
COMPRESSORS = {"zlib": _Zlib, "lzma": _Lzma}


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


#: The signed form's version tag.
SIGNED = b"bcs1"
_SALT = "django_bigcache.serializers.value"


def _mac(key, data, secret):
    from django.utils.crypto import salted_hmac

    signed = key.encode() + b"\0" + data
    return salted_hmac(_SALT, signed, secret=secret, algorithm="sha256").digest()


class Unsigned(ValueError):
    """A stored value without a signature this site made."""


class Codec:
    """A serializer and an optional compressor: values to bytes and back,
    signed unless the serializer is JSON."""

    def __init__(self, serializer="pickle", compressor=None, compress_min_length=1024):
        self.serializer = _load(serializer, SERIALIZERS, "SERIALIZER")
        self.compressor = _load(compressor, COMPRESSORS, "COMPRESSOR") if compressor else None
        # JSON stays readable by any client, and loading it runs no code.
        self.signed = not isinstance(self.serializer, JSONSerializer)
        self.min_length = compress_min_length

    def dumps(self, value, key=""):
        """``value`` as stored under the cache key ``key`` (the server's)."""
        if type(value) is int:
            return str(value).encode()
        data = self.serializer.dumps(value)
        if self.compressor is not None and len(data) >= self.min_length:
            data = self.compressor.compress(data)
        if self.signed:
            from django.conf import settings

            return SIGNED + _mac(key, data, settings.SECRET_KEY) + data
        return data

    def _verified(self, data, key):
        from django.conf import settings

        if not data.startswith(SIGNED) or len(data) < len(SIGNED) + 32:
            raise Unsigned("not signed by this site")
        mac, data = data[len(SIGNED) : len(SIGNED) + 32], data[len(SIGNED) + 32 :]
        for secret in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]:
            if hmac.compare_digest(mac, _mac(key, data, secret)):
                return data
        raise Unsigned("its signature does not match this key and this site's SECRET_KEY")

    def loads(self, data, key=""):
        """The value stored as ``data`` under the cache key ``key``."""
        if _INTEGER.fullmatch(data):
            return int(data)
        if self.signed:
            data = self._verified(data, key)
        if self.compressor is not None:
            try:
                data = self.compressor.decompress(data)
            except Exception:  # stored uncompressed (short, or before compression was on)
                pass
        return self.serializer.loads(data)


class _NoGlobals(pickle.Unpickler):
    """Loads a pickle of plain data only: naming any class or function (the
    way a pickle runs code) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name} refused")


def legacy_int(data):
    """The integer an older connector stored pickled and unsigned, read
    without letting the pickle name anything; ``None`` if it is not one."""
    import io

    try:
        value = _NoGlobals(io.BytesIO(data)).load()
    except Exception:
        return None
    return value if type(value) is int else None
