"""onnxruntime (CPU) against jaxsr's CPU forward, img/s, on the same exported weights and the same photographs:
RRDB x4 (64/23/32) and Compact x4 (64 features, 16 convs: realesr-general-x4v3's size), one run.

    python benchmarks/bench_onnx.py [--size 256] [--batch 1] [--repeats 3] [--threads N] [--archs esrgan,compact]

Both run the fp32 files' computation: jaxsr jits the model for the batch shape (compile time excluded), and
onnxruntime runs the dynamic-shape file `jaxsr.deploy` writes, with all graph optimizations and `--threads`
intra-op threads (default: onnxruntime's, one per core). Timings are medians after a warm-up run (the first
calls, whose outputs give the max |diff| column).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from common import photos, table, timeit  # noqa: E402
from flax import nnx  # noqa: E402

from jaxsr import archs, deploy  # noqa: E402

SPECS = {
    "esrgan": {"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32},
    "compact": {"arch": "compact", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 64, "num_conv": 16, "act_type": "prelu"},
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--archs", default=",".join(SPECS))
    a = p.parse_args()
    import onnxruntime as ort

    x_nhwc = photos(a.batch, a.size)
    x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    rows = []
    for name in a.archs.split(","):
        if name not in archs.names():
            print(f"skipping {name}: not registered in this checkout")
            continue
        spec = SPECS[name]
        model = archs.build(spec, rngs=nnx.Rngs(0))
        proto, _ = deploy.build_graph(model, spec)
        opts = ort.SessionOptions()
        if a.threads:
            opts.intra_op_num_threads = a.threads
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        fwd = nnx.jit(lambda m, v: m(v))
        # the first calls (jit compile, onnxruntime's first run) are the warm-up, and give the outputs to compare
        diff = float(np.abs(sess.run(None, {"input": x_nchw})[0] - np.asarray(fwd(model, x_nhwc)).transpose(0, 3, 1, 2)).max())
        t_jax = timeit(lambda: fwd(model, x_nhwc), warmup=0, repeats=a.repeats, sync=jax.block_until_ready)
        t_ort = timeit(lambda: sess.run(None, {"input": x_nchw}), warmup=0, repeats=a.repeats)
        rows.append([f"{name} x4", f"{a.size}x{a.size}", a.batch, f"{a.batch / t_jax:.3f}", f"{a.batch / t_ort:.3f}",
                     f"{t_jax / t_ort:.2f}", f"{diff:.1e}"])
    print(f"CPU: {os.cpu_count()} cores, jax {jax.__version__}, onnxruntime {ort.__version__}")
    print(table(rows, ["model", "input", "batch", "jaxsr img/s", "onnxruntime img/s", "ort speedup", "max |diff|"]))


if __name__ == "__main__":
    main()
