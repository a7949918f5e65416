"""Timing helpers shared by the benchmarks: warm up, then median wall time over repeats."""
import statistics
import time


def timeit(fn, *, warmup=2, repeats=5, sync=lambda out: None):
    """Median seconds of fn() over `repeats` runs after `warmup` runs; `sync` waits for async results."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def table(rows, headers):
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(v).rjust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
