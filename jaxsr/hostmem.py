"""Transparent huge pages for the trainer's host buffers, through glibc's `glibc.malloc.hugetlb` tunable.

XLA:CPU allocates a program's temporaries when it runs and frees them when it ends, and glibc hands buffers of that
size back to the kernel at once (munmap). So every train step takes its temporaries anew, and the kernel faults them
in and zeroes them one 4 KiB page at a time: 330,000 page faults a step for RRDB x4 at batch 4, LR 32, about a tenth
of the step. With `glibc.malloc.hugetlb=1` glibc asks for transparent huge pages for those buffers (2 MiB: 512 times
fewer faults), and the trainer's step runs 7-24% faster for most families (docs/performance.md). glibc reads its
tunables only when a process starts, so `reexec_with_huge_pages` starts the command again, same process id, with the
tunable set.
"""
import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"
MARK = "JAXSR_HUGE_PAGES"  # set by the re-exec: the process it starts neither loops nor is in doubt about why
LOG_LINE = (f"host memory: huge pages for large buffers ({TUNABLE}=1; XLA:CPU takes a step's temporaries anew each step, "
            "and faulting them in 4 KiB pages cost about a tenth of the step)")


def _thp_mode(path=THP):
    """The kernel's transparent huge page mode (always, madvise or never), or None where it has none."""
    try:
        with open(path) as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


def huge_pages_env(environ=None, thp_mode=None, libc=None):
    """The environment that gives this process's large buffers huge pages, or None where setting it changes nothing: not
    glibc 2.35 or later (which has the tunable), a kernel whose huge pages are `always` on (large mappings get them
    anyway) or `never` on, or a GLIBC_TUNABLES of the user's that sets the tunable already (theirs wins)."""
    environ = os.environ if environ is None else environ
    name, version = libc or platform.libc_ver()
    if name != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
        return None
    if (thp_mode or _thp_mode()) != "madvise" or MARK in environ:
        return None
    given = environ.get("GLIBC_TUNABLES", "")
    if any(t.split("=")[0] == TUNABLE for t in given.split(":")):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [given, f"{TUNABLE}=1"])), MARK: "1"}


def reexec_with_huge_pages():
    """Start this command again with huge pages for its buffers where that changes anything (huge_pages_env); call
    first thing, before anything has been printed or started. The process keeps its id, so a launcher or a signal
    reaches it as before."""
    env = huge_pages_env()
    if env is not None:
        os.execve(sys.executable, sys.orig_argv, env)


def chosen():
    """The run's log line where the re-exec set the tunable, else None."""
    return LOG_LINE if os.environ.get(MARK) == "1" else None
