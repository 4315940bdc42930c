"""``python manage.py bigcache_purge /dataset/7/ --prefix /datasets/ --tag
dataset-7 [--soft]``: the
purge helpers from a shell (a deploy script, a cron job, an operator), on
every node in ``settings.BIGCACHE["LOCATION"]``. Exits non-zero, naming the
node and what it said, when a node could not be reached, refused the purge,
or purged but could not re-warm (``--warm``), so a script notices."""

from django.core.management.base import BaseCommand, CommandError

from django_bigcache.purge import purge
from django_bigcache.tags import check_tag


class Command(BaseCommand):
    help = "Purge cached pages by path, prefix or tag on every bigcache node."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", metavar="path", help="a page's path, query included (every variant)")
        parser.add_argument("--prefix", action="append", default=[], help="every page whose path starts with this (repeatable)")
        parser.add_argument("--tag", action="append", default=[], help="every page tagged with this (repeatable)")
        parser.add_argument("--soft", action="store_true", help="mark the pages stale instead: served while refreshed")
        parser.add_argument("--warm", action="store_true", help="with --soft: bigcache refreshes them at once")

    def handle(self, *args, paths, prefix, tag, soft, warm, **options):
        if not paths and not prefix and not tag:
            raise CommandError("name at least one path, --prefix or --tag")
        if warm and not soft:
            raise CommandError("--warm needs --soft")
        for p in paths + prefix:
            if not p.startswith("/"):
                raise CommandError(f"{p!r}: paths start with '/' (as Django's request.get_full_path() gives them)")
        for t in tag:
            try:
                check_tag(t)
            except ValueError as e:
                raise CommandError(str(e)) from None
        result = purge(paths=paths, prefixes=prefix, tags=tag, soft=soft, warm=warm)
        purged_on = result.nodes - len(result.failed) - len(result.refused)
        self.stdout.write(f"purged {result.count} entries on {purged_on}/{result.nodes} nodes")
        problems = [f"refused by {node}: {said}" for node, said in result.refused]
        problems += [f"purged but not re-warmed on {node}: {said}" for node, said in result.not_warmed]
        if result.failed:
            problems.append(f"not reached: {', '.join(result.failed)}")
        if problems:
            raise CommandError("; ".join(problems))
