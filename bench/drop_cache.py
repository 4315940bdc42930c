"""Drops every file under the given directories from the page cache, so
the next reads of them come from the disk (bench/run.sh diskcold).

    python3 bench/drop_cache.py DIR...

posix_fadvise(POSIX_FADV_DONTNEED) per file: only clean pages go, so the
caller syncs first. Missing directories are skipped.
"""
import os
import sys


def drop(root: str) -> int:
    n = 0
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            finally:
                os.close(fd)
    return n


def main() -> None:
    os.sync()
    for root in sys.argv[1:]:
        drop(root)


if __name__ == "__main__":
    main()
