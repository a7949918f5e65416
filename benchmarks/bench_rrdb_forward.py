"""RRDB x4 (64/23/32) forward img/s on a batch of 64x64 LR: jaxsr against spandrel's PyTorch module, same run.

    python benchmarks/bench_rrdb_forward.py [--batch 4] [--size 64] [--repeats 5]

On a GPU it adds bf16 rows (jaxsr compute_dtype bf16; torch autocast bf16 + channels_last) and model TFLOP/s
(146.9 GFLOP per 64x64 forward, docs/performance.md).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import table, timeit  # noqa: E402
from flax import nnx  # noqa: E402

import conftest  # noqa: E402,F401  (torchvision stub for spandrel)
from jaxsr.archs import esrgan  # noqa: E402
from jaxsr.archs.bridge import load_state_dict  # noqa: E402
from jaxsr.archs.esrgan import RRDBNet  # noqa: E402

GFLOP_64 = 146.9  # forward GFLOP per 64x64 LR image (counted in docs/performance.md)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    from spandrel.architectures.ESRGAN import ESRGAN

    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    dev = "cuda" if gpu else "cpu"
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4).eval().to(dev)
    sd = {k: v.cpu().numpy() for k, v in net.state_dict().items()}
    x = np.random.default_rng(0).random((a.batch, a.size, a.size, 3), dtype=np.float32)
    gflop = GFLOP_64 * (a.size / 64) ** 2 * a.batch
    rows = []

    def row(name, seconds):
        rows.append([name, f"{a.batch / seconds:.2f}", f"{seconds * 1e3:.1f}", f"{gflop / seconds / 1e3:.3f}"])

    for dtype in ([jnp.float32, jnp.bfloat16] if gpu else [jnp.float32]):
        model = RRDBNet(dtype=dtype, rngs=nnx.Rngs(0))
        load_state_dict(model, esrgan.from_torch(sd))
        gdef, state = nnx.split(model)
        fwd = jax.jit(lambda s, x: nnx.merge(gdef, s)(x))
        xj = jnp.asarray(x)
        row(f"jaxsr jit {jnp.dtype(dtype).name}", timeit(lambda: fwd(state, xj), repeats=a.repeats, sync=lambda o: o.block_until_ready()))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).to(dev)
    sync = (lambda o: torch.cuda.synchronize()) if gpu else (lambda o: None)
    with torch.no_grad():
        row("torch eager fp32", timeit(lambda: net(xt), repeats=a.repeats, sync=sync))
        if gpu:
            net_cl, xcl = net.to(memory_format=torch.channels_last), xt.to(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                row("torch eager bf16+channels_last", timeit(lambda: net_cl(xcl), repeats=a.repeats, sync=sync))
                compiled = torch.compile(net_cl)
                row("torch.compile bf16+channels_last", timeit(lambda: compiled(xcl), warmup=3, repeats=a.repeats, sync=sync))
    print(f"RRDB x4 64/23/32 forward, batch {a.batch} of {a.size}x{a.size} LR, device {jax.devices()[0].device_kind}, torch threads {torch.get_num_threads()}")
    print(table(rows, ["impl", "img/s", "ms/batch", "TFLOP/s"]))
    base = float(rows[0][1])
    for r in rows[1:]:
        print(f"jaxsr {rows[0][0].split()[-1]} / {r[0]}: {base / float(r[1]):.2f}x")


if __name__ == "__main__":
    main()
