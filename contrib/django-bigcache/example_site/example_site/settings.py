"""A small Django site that shows bigcache in front of Django, and that the
package's end-to-end tests run behind the real proxy (see ../tests)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-secret")
DEBUG = False
# The names requests may carry: local trials, and the shipped nginx
# configs' placeholder site (nginx/bigcache.conf). A real site lists its own.
ALLOWED_HOSTS = os.environ.get(
    "EXAMPLE_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],www.example.org,example.org"
).split(",")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.sitemaps",
    "django_bigcache",
    "datasets",
]
MIDDLEWARE = [
    # First, so it marks the response every other middleware made.
    "django_bigcache.middleware.BigCacheMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "example_site.urls"
WSGI_APPLICATION = "example_site.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# Behind bigcache (and nginx): bigcache passes X-Forwarded-Proto only from a
# --trusted-proxy and sets it to "http" for anyone else, so Django may
# believe it.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
STATIC_URL = "/static/"

# bigcache: the REST API for the cache backend and for purges; one node, or
# several separated by commas.
BIGCACHE_URL = os.environ.get("BIGCACHE_URL", "http://127.0.0.1:36379")
BIGCACHE = {
    "LOCATION": BIGCACHE_URL,
    "TOKEN": os.environ.get("BIGCACHE_API_TOKEN"),
    # Pages cached without a decorator (BigCacheMiddleware): first match wins.
    "PAGES": [(r"^/about/$", "1h")],
}
CACHES = {
    "default": {
        "BACKEND": "django_bigcache.backend.BigCacheBackend",
        "LOCATION": BIGCACHE_URL,
        "KEY_PREFIX": "example",
        "TIMEOUT": 60 * 60 * 24 * 28,
    }
}

# How long the "slow" dataset page takes to render (the original site's
# pages took about 1.5 s).
SLOW_SECONDS = float(os.environ.get("EXAMPLE_SLOW_SECONDS", "1.5"))
