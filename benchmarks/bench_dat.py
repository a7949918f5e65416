"""DAT-2 x4 forward and train-step throughput: jaxsr against spandrel's PyTorch DAT in the same run.

    python benchmarks/bench_dat.py [--batch 8] [--lr 64] [--steps 3] [--variant dat_2] [--dtype float32|bfloat16]
                                   [--remat] [--no-torch] [--torch-compile]

Prints one table: img/s for the forward (eval) and the train step (L1 loss, gradient, Adam update; train mode with
BatchNorm batch statistics and drop path), peak memory, and the jaxsr/torch ratio. Model FLOPs (docs/performance.md):
DAT-2 x4 at LR 64 is 53.7 GMAC forward = 107 GFLOP; a training image costs ~322 GFLOP.
On GPU, use --dtype bfloat16 (torch: autocast bf16 + channels_last), which also selects cuDNN attention.
"""
import argparse
import resource
import sys
import time

import numpy as np

sys.path.insert(0, ".")

GFLOP_FWD = {"dat_2": 107.4, "dat": 136.6}  # per LR-64 x4 image (docs/performance.md; "dat" has expansion factor 4)


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _time(fn, steps):
    fn()  # compile / warm up
    fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def bench_jax(spec, x, y, steps, dtype):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxsr.archs.dat import build

    model = build(spec, dtype=jnp.dtype(dtype))
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    @nnx.jit
    def fwd(m, x):
        return m(x)

    t_fwd = _time(lambda: fwd(model, xj).block_until_ready(), steps)
    model.train()
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-4, b1=0.9, b2=0.99)
    opt = tx.init(params)

    @jax.jit
    def step(params, rest, opt, x, y):
        def loss_fn(p):
            m = nnx.merge(gd, p, jax.tree.map(lambda a: a, rest))
            return jnp.mean(jnp.abs(m(x) - y)), nnx.state(m, nnx.Not(nnx.Param))

        (loss, rest2), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), rest2, opt, loss

    st = [params, rest, opt]

    def run():
        st[0], st[1], st[2], loss = step(st[0], st[1], st[2], xj, yj)
        loss.block_until_ready()

    t_train = _time(run, steps)
    dev = jax.devices()[0]
    mem = None
    if dev.platform == "gpu":
        stats = dev.memory_stats() or {}
        mem = stats.get("peak_bytes_in_use", 0) / 2**30
    return t_fwd, t_train, mem


def bench_torch(spec, x, y, steps, dtype, compile_=False):
    import torch
    from spandrel.architectures.DAT import DAT

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = DAT(upscale=spec["scale"], embed_dim=spec["embed_dim"], depth=spec["depth"], num_heads=spec["num_heads"],
            split_size=spec["split_size"], expansion_factor=spec["expansion_factor"],
            resi_connection=spec["resi_connection"], upsampler=spec["upsampler"], use_chk=spec.get("use_chk", False),
            img_size=64).to(dev)
    if dev == "cuda":
        m = m.to(memory_format=torch.channels_last)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).to(dev)
    yt = torch.from_numpy(y.transpose(0, 3, 1, 2)).to(dev)
    amp = dtype == "bfloat16"
    run_m = torch.compile(m) if compile_ else m

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    def fwd():
        with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            run_m.eval()(xt)
        sync()

    t_fwd = _time(fwd, steps)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def step():
        run_m.train()
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            loss = (run_m(xt) - yt).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    t_train = _time(step, steps)
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None
    return t_fwd, t_train, mem


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="dat_2")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--remat", action="store_true", help="gradient checkpointing per block (both sides)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--torch-compile", action="store_true")
    p.add_argument("--only", choices=["jax", "torch", "torch-compile"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    import os

    tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
    sys.path.insert(0, tests)
    import conftest  # noqa: F401  (torchvision stub for spandrel)

    from jaxsr.archs.dat import spec_for

    spec = spec_for(a.variant, scale=a.scale, use_chk=a.remat)
    rng = np.random.default_rng(0)
    x = rng.random((a.batch, a.lr, a.lr, 3), np.float32)
    y = rng.random((a.batch, a.lr * a.scale, a.lr * a.scale, 3), np.float32)
    if a.only:
        import json

        if a.only == "jax" and a.remat:
            from jaxsr import parallel

            parallel.use_memory_schedule({"use_chk": True})  # as run_train does for remat models

        if a.only == "jax":
            f, t, mem = bench_jax(spec, x, y, a.steps, a.dtype)
        else:
            f, t, mem = bench_torch(spec, x, y, a.steps, a.dtype, compile_=a.only == "torch-compile")
        print("RESULT " + json.dumps([f, t, mem if mem is not None else _peak_rss_gb()]))
        return 0
    # each implementation in its own process, so that peak memory (max RSS on CPU) is its own
    import json
    import subprocess

    impls = [("jaxsr", "jax")]
    if not a.no_torch:
        impls.append(("spandrel (torch eager)", "torch"))
        if a.torch_compile:
            impls.append(("spandrel (torch.compile)", "torch-compile"))
    rows = []
    base = [sys.executable, os.path.abspath(__file__), "--variant", a.variant, "--scale", str(a.scale), "--batch",
            str(a.batch), "--lr", str(a.lr), "--steps", str(a.steps), "--dtype", a.dtype] + (["--remat"] if a.remat else [])
    for name, only in impls:
        out = subprocess.run(base + ["--only", only], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        out = out.stdout
        f, t, mem = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
        rows.append((name, f, t, mem))
    gf = GFLOP_FWD.get(a.variant) if a.scale == 4 and a.lr == 64 else None
    print(f"\n{a.variant} x{a.scale}, LR {a.lr}, batch {a.batch}, {a.dtype}, remat={a.remat}, steps timed {a.steps}"
          f"{'' if gf is None else f'; {gf:.0f} GFLOP fwd / {3 * gf:.0f} GFLOP train per image'}")
    print(f"{'impl':26s} {'fwd img/s':>10s} {'train img/s':>12s} {'peak GiB':>9s}"
          f"{'' if gf is None else '  fwd TFLOP/s  train TFLOP/s'}")
    for name, f, t, mem in rows:
        line = f"{name:26s} {a.batch / f:10.3f} {a.batch / t:12.3f} {mem:9.2f}"
        if gf is not None:
            line += f"  {a.batch * gf / f / 1e3:11.4f}  {a.batch * 3 * gf / t / 1e3:13.4f}"
        print(line)
    for name, f, t, _ in rows[1:]:
        print(f"ratio jaxsr vs {name}: forward {f / rows[0][1]:.2f}x, train step {t / rows[0][2]:.2f}x (>1: jaxsr faster)")
    print("peak memory: GPU peak bytes in use (jax) / max_memory_allocated (torch); on CPU the process's max RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
