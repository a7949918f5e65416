"""Degradation throughput, alone and as a share of an RRDB x4 train step (not a test).

    python benchmarks/bench_degrade.py [--batch 16] [--gt 256] [--iters 20] [--step] [--num-block 23]

Prints img/s of the Real-ESRGAN pipeline (jit, real photographs). With --step it also times an RRDB
generator step (L1, Adam) on the degraded batch, the step alone on a fixed LQ batch, and reports the
degradation's share of the fused step = (fused - step alone) / fused. On CPU the RRDB step is very slow;
the share is meaningful on an accelerator.
"""
import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import skimage.data  # noqa: E402
from flax import nnx  # noqa: E402

from jaxsr.degrade import default_config, degrade  # noqa: E402


def photos(batch, size):
    """Real photographs, randomly cropped (reflect-padded where smaller)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(batch):
        img = getattr(skimage.data, ("astronaut", "coffee", "chelsea", "rocket")[i % 4])()[..., :3] / 255.0
        img = np.pad(img, ((0, max(size - img.shape[0], 0)), (0, max(size - img.shape[1], 0)), (0, 0)), mode="reflect")
        t, l = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        out.append(img[t:t + size, l:l + size])
    return jnp.asarray(np.stack(out), jnp.float32)


def timeit(fn, iters):
    jax.block_until_ready(fn(0))  # compile
    t = time.perf_counter()
    for i in range(iters):
        out = fn(i + 1)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--gt", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--step", action="store_true", help="also time an RRDB x4 train step and the fused step")
    ap.add_argument("--num-block", type=int, default=23)
    args = ap.parse_args()

    cfg = default_config()
    cfg.gt_size = args.gt
    gt = photos(args.batch, args.gt)
    deg = jax.jit(functools.partial(degrade, cfg=cfg, scale=4))
    t_deg = timeit(lambda i: deg(jax.random.key(i), gt)["lq"], args.iters)
    print(f"device: {jax.devices()[0].device_kind}  batch {args.batch}  GT {args.gt}")
    print(f"| what | ms/batch | img/s |\n|---|---|---|\n| degradation (Real-ESRGAN, jit) | {t_deg * 1e3:.1f} | {args.batch / t_deg:.1f} |")
    if not args.step:
        return

    from jaxsr.archs.esrgan import RRDBNet

    model = RRDBNet(num_block=args.num_block, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)

    def train(model, opt, lq, target):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(jnp.abs(m(lq) - target)))(model)
        opt.update(model, grads)
        return loss

    @nnx.jit
    def step_only(model, opt, lq, target):
        return train(model, opt, lq, target)

    @nnx.jit
    def fused(model, opt, key, gt):
        out = degrade(key, gt, cfg, 4)
        return train(model, opt, out["lq"], out["gt_usm"])

    lq = deg(jax.random.key(0), gt)["lq"]
    t_step = timeit(lambda i: step_only(model, opt, lq, gt), args.iters)
    t_fused = timeit(lambda i: fused(model, opt, jax.random.key(i), gt), args.iters)
    share = (t_fused - t_step) / t_fused
    print(f"| RRDB step alone | {t_step * 1e3:.1f} | {args.batch / t_step:.1f} |")
    print(f"| degradation + RRDB step, one jit | {t_fused * 1e3:.1f} | {args.batch / t_fused:.1f} |")
    print(f"degradation share of the fused step: {share:.1%}")


if __name__ == "__main__":
    main()
