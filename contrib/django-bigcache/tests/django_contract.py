"""Django's own cache contract, run against BigCacheBackend: the
``BaseCacheTests`` of the ``tests/cache/tests.py`` in Django's source
distribution (the version installed here), as Django runs it for its own
backends. Run by ``test_django_contract.py``, in a process of its own:

    python django_contract.py <django-source-tests-dir> <bigcache-api-url>

Prints one line ``CONTRACT run=N failures=F errors=E skipped=S`` after the
unittest report.
"""

import sys
import unittest

tests_dir, api = sys.argv[1], sys.argv[2]
sys.path.insert(0, tests_dir)

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "cache"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    CACHES={"default": {"BACKEND": "django_bigcache.backend.BigCacheBackend", "LOCATION": api}},
    USE_TZ=True,
    SECRET_KEY="contract-tests-only",
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    MIDDLEWARE=[],
)
django.setup()

from cache.tests import BaseCacheTests, caches_setting_for_tests  # noqa: E402
from django.test import TestCase, override_settings  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

#: The tests that do not apply to bigcache, each with its reason.
SKIPS = {
    "test_cull": "bigcache evicts by its disk budget (S3-FIFO), not by MAX_ENTRIES",
    "test_zero_cull": "bigcache evicts by its disk budget (S3-FIFO), not by CULL_FREQUENCY",
    "test_cull_delete_when_store_empty": "bigcache evicts by its disk budget, not by MAX_ENTRIES",
}


@override_settings(
    CACHES=caches_setting_for_tests(
        base={"BACKEND": "django_bigcache.backend.BigCacheBackend", "LOCATION": api},
        exclude={"cull", "zero_cull"},
    )
)
class BigCacheContractTests(BaseCacheTests, TestCase):
    pass


for name, reason in SKIPS.items():
    setattr(BigCacheContractTests, name, unittest.skip(reason)(getattr(BaseCacheTests, name)))

if __name__ == "__main__":
    setup_test_environment()
    from django.test.utils import get_runner

    runner = get_runner(settings)(verbosity=1, interactive=False)
    old = runner.setup_databases()
    suite = unittest.TestLoader().loadTestsFromTestCase(BigCacheContractTests)
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    runner.teardown_databases(old)
    for test, reason in result.skipped:
        print(f"SKIP {test.id().rsplit('.', 1)[1]}: {reason}")
    print(f"CONTRACT run={result.testsRun} failures={len(result.failures)} errors={len(result.errors)} skipped={len(result.skipped)}")
