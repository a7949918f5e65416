"""Which XLA:CPU kernels train each family faster on this CPU: the trainer's step (as bench_archs.py --trainer runs it:
run_train's CPU devices, L1 + Adam, training mode) with its convolutions and matmuls on YNNPACK (this jaxlib's
default), with only the matmuls on YNNPACK, with neither (XLA's own Eigen kernels), and with the matmuls on oneDNN
(onednn), against spandrel's PyTorch module on all cores. Each measurement is its own process; the order alternates
between repeats, and the best of the repeats is kept. Not a test.

    python benchmarks/bench_cpu_kernels.py [--archs compact,span,esrgan_plus] [--batch 4] [--lr 32] [--steps 3]
                                           [--repeats 1] [--variants ynnpack,dots,own[,onednn]]

The column `table` is the family's entry of `jaxsr.parallel.CPU_KERNELS` (run_train's candidate besides the default,
and its setting where it does not time them); `auto` is what run_train's timing (`jaxsr.train.cpu_kernels`) picks from
this run's numbers: the candidate where it is 3% faster than the default.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]

from bench_archs import standard_spec  # noqa: E402
from common import table  # noqa: E402

from jaxsr import archs, parallel, weights  # noqa: E402
from jaxsr.train import cpu_kernels  # noqa: E402

VARIANTS = {"torch": None, "ynnpack": parallel.YNNPACK, "dots": parallel.YNNPACK_DOTS, "own": parallel.NO_YNNPACK,
            "onednn": parallel.ONEDNN_DOTS}


def measure(name, variant, path, a):
    """(seconds per step, peak RSS GiB) of one variant, from a fresh process."""
    env = dict(os.environ)
    if VARIANTS[variant]:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {VARIANTS[variant]}".strip()
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_archs.py"), "--only",
           "torch" if variant == "torch" else "trainer", "--arch", name, "--export", path, "--batch", str(a.batch),
           "--lr", str(a.lr), "--steps", str(a.steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        sys.exit(f"{name} {variant} failed:\n{out.stderr[-3000:]}")
    r = json.loads(line[0][7:])
    return r["train"], r["rss"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--archs", default="compact,span,realplksr,esrgan_plus,safmn,mosr,omnisr,plksr,rcan")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--variants", default="ynnpack,dots,own", help="the kernel settings to measure beside torch")
    a = p.parse_args()
    variants = ["torch", *a.variants.split(",")]
    rows = []
    for name in a.archs.split(","):
        spec = standard_spec(name)
        path = os.path.join(tempfile.mkdtemp(), f"{name}.pth")
        weights.export(archs.build(spec), spec, path)
        got = {v: [] for v in variants}
        for r in range(a.repeats):
            for v in variants[:: 1 if r % 2 == 0 else -1]:
                got[v].append(measure(name, v, path, a))
        best = {v: (min(t for t, _ in xs), min(m for _, m in xs)) for v, xs in got.items()}
        t = best["torch"][0]
        table_pick = parallel.CPU_KERNELS.get(spec["arch"], "ynnpack")
        auto = "-"
        if table_pick == "ynnpack":
            auto = "ynnpack"
        elif {"ynnpack", table_pick} <= set(best):
            auto = table_pick if cpu_kernels.other_wins(best["ynnpack"][0], best[table_pick][0]) else "ynnpack"
        rows.append([name, f"{a.batch / t:.2f}", *(f"{t / best[v][0]:.2f}" if v in best else "-" for v in list(VARIANTS)[1:]),
                     table_pick, auto, f"{best['torch'][1]:.2f}", f"{best[auto][1]:.2f}" if auto in best else "-"])
        print(rows[-1], flush=True)
    print(f"\nbatch {a.batch}, LR {a.lr}, float32, the trainer's step on run_train's CPU devices: torch's img/s, then jaxsr "
          "/ torch (higher is faster) with YNNPACK's convolutions and matmuls (the default), its matmuls only (dots), "
          "neither (own), the matmuls on oneDNN (onednn); the family's CPU_KERNELS entry, what run_train's timing picks from "
          "these numbers; peak RSS GiB of the process")
    print(table(rows, ["arch", "torch img/s", *list(VARIANTS)[1:], "table", "auto", "RSS torch", "RSS auto"]))


if __name__ == "__main__":
    main()
