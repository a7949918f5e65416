"""Huge pages for the trainer's host buffers (jaxsr.hostmem): set only where they change something, by a re-exec that
keeps the process, and what the kernel then gives the process's large buffers."""
import os
import subprocess
import sys

import pytest

from jaxsr import hostmem

GLIBC = ("glibc", "2.36")


def test_the_tunable_is_added_only_where_it_changes_something_and_the_users_wins():
    env = hostmem.huge_pages_env({"PATH": "/bin"}, "madvise", GLIBC)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", hostmem.MARK: "1"}
    env = hostmem.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", GLIBC)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"  # the user's other tunables kept
    for environ, thp, libc in (({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", GLIBC),  # the user's choice
                               ({hostmem.MARK: "1"}, "madvise", GLIBC),  # already re-executed: no loop
                               ({}, "always", GLIBC), ({}, "never", GLIBC),  # the kernel decides alone
                               ({}, "madvise", ("glibc", "2.31")), ({}, "madvise", ("", ""))):  # no such tunable
        assert hostmem.huge_pages_env(environ, thp, libc) is None, (environ, thp, libc)


PROBE = """import ctypes, os
from jaxsr import hostmem
print(os.getpid(), os.environ.get(hostmem.MARK), flush=True)
hostmem.reexec_with_huge_pages()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
ctypes.memset(libc.malloc(256 << 20), 1, 256 << 20)  # as XLA:CPU takes its buffers (numpy asks for huge pages itself)
print(sum(int(l.split()[1]) for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")))
"""


@pytest.mark.skipif(hostmem.huge_pages_env({}) is None, reason="here the tunable would change nothing (not glibc >= "
                    "2.35, or the kernel's transparent huge pages are not in madvise mode)")
def test_the_reexec_keeps_the_process_and_its_large_buffers_get_huge_pages():
    base = {k: v for k, v in os.environ.items() if k not in (hostmem.MARK, "GLIBC_TUNABLES")}
    run = lambda env: subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,  # noqa: E731
                                     timeout=60).stdout.split()
    pid, before, pid2, after, huge = run(base)
    assert pid == pid2 and (before, after) == ("None", "1")  # the same process, started again once
    pid, before, plain = run({**base, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})  # the user's setting: no re-exec
    assert int(huge) >= 128 << 10 and int(plain) < int(huge) - (128 << 10), (huge, plain)  # KiB on huge pages
