"""The convolutions jaxsr computes its own way on XLA:CPU (`jaxsr.archs.common.conv_general_dilated`): depthwise
layers as shifted slices, large kernels of few channels as FFTs; against XLA's convolution and torch's conv2d, forward
and the gradient of both inputs, at the shapes the architectures train with (not a test).

    python benchmarks/bench_cpu_convs.py [--batch 8] [--size 64] [--repeats 5] [--which all|depthwise|large]
"""
import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import table, timeit  # noqa: E402

from jaxsr.archs import common as archs_common  # noqa: E402

# (who, channels, kernel, depthwise): the depthwise layers of the standard configurations, then the large kernels
LAYERS = [("SAFMN 36 (9 ch per level)", 9, 3, True), ("DAT / RGT 180", 180, 3, True),
          ("OmniSR 64 (qkv 192)", 192, 3, True), ("SRFormer 180 (FFN 360)", 360, 5, True),
          ("ATD 210 (FFN 420)", 420, 5, True), ("MoSR 64 (GPS 96)", 96, 7, True),
          ("RealPLKSR / PLKSR 64 (16 of 64)", 16, 17, False), ("RealPLKSR / PLKSR 64 at 13", 16, 13, False)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--which", choices=["all", "depthwise", "large"], default="all")
    a = p.parse_args()
    rows = []
    for who, c, k, depthwise in LAYERS:
        if a.which != "all" and depthwise != (a.which == "depthwise"):
            continue
        groups = c if depthwise else 1
        rng = np.random.default_rng(0)
        x = rng.standard_normal((a.batch, a.size, a.size, c), np.float32)
        w = rng.standard_normal((k, k, c // groups, c), np.float32) * 0.1
        pad = ((k // 2, k // 2),) * 2
        ours = functools.partial(archs_common.conv_general_dilated, window_strides=(1, 1), padding=pad,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
        xla = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding=pad,
                                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
        xj, wj = jnp.asarray(x), jnp.asarray(w)
        times = {}
        for name, f in (("xla", xla), ("ours", ours)):
            fwd = jax.jit(f)
            grad = jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))
            times[name] = [timeit(lambda: fwd(xj, wj), repeats=a.repeats, sync=jax.block_until_ready),
                           timeit(lambda: grad(xj, wj), repeats=a.repeats, sync=jax.block_until_ready)]
        # torch in its faster memory layout: NCHW, or channels_last (the strides of the NHWC array transposed), whose
        # 17x17 weight gradient runs 35x slower than NCHW's while RealPLKSR's whole step is 1.9x faster in it
        t_fwd, t_grad = float("inf"), float("inf")
        for xt in (torch.tensor(x.transpose(0, 3, 1, 2)).contiguous(), torch.from_numpy(x.transpose(0, 3, 1, 2))):
            xt.requires_grad_()
            wt = torch.tensor(w.transpose(3, 2, 0, 1)).contiguous().requires_grad_()
            conv = lambda: torch.nn.functional.conv2d(xt, wt, padding=k // 2, groups=groups)  # noqa: E731
            with torch.no_grad():
                t_fwd = min(t_fwd, timeit(conv, repeats=a.repeats))
            t_grad = min(t_grad, timeit(lambda: torch.autograd.grad((conv() ** 2).sum(), (xt, wt)), repeats=a.repeats))
        ms = lambda t: f"{t * 1e3:.1f}"  # noqa: E731
        rows.append([who, f"{k}x{k}", ms(times["xla"][0]), ms(times["ours"][0]), ms(t_fwd), ms(times["xla"][1]),
                     ms(times["ours"][1]), ms(t_grad), f"{t_grad / times['ours'][1]:.2f}"])
        print(rows[-1], flush=True)
    print(f"\nbatch {a.batch} x {a.size}x{a.size}, fp32, {torch.get_num_threads()} torch threads (the faster of NCHW and "
          "channels_last); ms; grad = forward and both gradients; last column torch / ours (higher is faster)")
    print(table(rows, ["layer", "kernel", "fwd xla", "fwd ours", "fwd torch", "grad xla", "grad ours", "grad torch",
                       "grad ratio"]))


if __name__ == "__main__":
    main()
