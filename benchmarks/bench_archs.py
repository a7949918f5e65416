"""Forward and train-step throughput of each architecture: jaxsr against spandrel's PyTorch module on the same weights,
each in its own process (so that peak memory is its own), one table (not a test).

    python benchmarks/bench_archs.py [--archs compact,span,realplksr,esrgan_plus,swinir,hat] [--batch 8] [--lr 64]
                                     [--steps 3] [--dtype float32|bfloat16] [--remat] [--memory] [--trainer]

The standard configurations: Compact 64/16 (realesr-animevideov3), SPAN 48, RealPLKSR 64/28/17 with DySample,
ESRGAN+ 64/23/32, SwinIR-M classical, HAT-S, PLKSR 64/28/17 CCM (`plksr`, traiNNer-redux's default), MoSR 64/24
with GPS (`mosr`, its from-scratch template's), RCAN 10/20/64 and SAFMN 36/8 (the papers'), Real-CUGAN x4 (the
released networks' fixed widths), OmniSR 64/5 (traiNNer-redux's template, the paper's), and the standard SRFormer,
RGT, DRCT, ATD and Swin2SR-M (their DEFAULTS); all x4. The train step
is an L1 loss, its gradient and an Adam update, in training mode (dropout, drop path). The torch module is spandrel's,
loaded from jaxsr's export of the same model, with torch's default threads (all cores); on a CPU it runs in both
memory layouts, NCHW and channels_last, and the table keeps the one whose train step is faster (its last column):
channels_last was the faster for RealPLKSR, PLKSR and Compact at batch 4, LR 32, but its 17x17 weight gradient can
be 35x slower than NCHW's (PLKSR at batch 2, LR 64: 38.5 s against 2.15 s a step; docs/performance.md). --trainer adds the trainer's
own step (`jaxsr.train.kinds.sr`'s builders, L1 + Adam) on the devices run_train sets up on this host: on a CPU one
XLA:CPU device per core, the batch split over them, with its huge pages for host buffers (`jaxsr.hostmem`) and the
XLA:CPU kernels run_train would pick: for the families it times on the host (`jaxsr.parallel.CPU_KERNELS`) both
settings run and the column `kernels` names the one its rule keeps (`jaxsr.train.cpu_kernels`).
On GPU, --dtype bfloat16 uses bf16 compute in jaxsr and autocast bf16 + channels_last in torch. --remat (the
transformers): gradient checkpointing per block (jaxsr `use_chk` under the XLA:CPU memory schedule, as run_train sets
it; torch `use_checkpoint`, RGT's `use_chk`; none for SRFormer and DRCT, whose references cannot).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]

from common import timeit  # noqa: E402


# spandrel's SRFormer checkpoints its blocks without their x_size argument (the forward fails), and DRCT has no flag:
# these run torch without remat
NO_TORCH_REMAT = ("srformer", "drct")


def standard_spec(name, remat=False):
    """The spec of each architecture's standard x4 configuration (with per-block remat for the transformers if asked)."""
    from jaxsr.archs.hat import spec_for as hat_spec
    from jaxsr.archs.swinir import spec_for as swinir_spec

    specs = {
        "compact": {"arch": "compact", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 64, "num_conv": 16, "act_type": "prelu"},
        "span": {"arch": "span", "scale": 4, "in_ch": 3, "out_ch": 3, "feature_channels": 48, "bias": True, "norm": False,
                 "img_range": 255.0, "rgb_mean": (0.4488, 0.4371, 0.4040)},
        "realplksr": {"arch": "realplksr", "scale": 4, "dim": 64, "n_blocks": 28, "kernel_size": 17,
                      "split_ratio": 0.25, "use_ea": True, "norm_groups": 4, "dropout": 0.0, "upsampler": "dysample",
                      "layer_norm": True},
        "plksr": {"arch": "plksr", "scale": 4, "dim": 64, "n_blocks": 28, "ccm_type": "CCM", "kernel_size": 17,
                  "split_ratio": 0.25, "lk_type": "PLK", "use_ea": True},
        "mosr": {"arch": "mosr", "scale": 4, "dim": 64, "n_block": 24, "upsampler": "gps", "kernel_size": 7,
                 "expansion_ratio": 1.5, "conv_ratio": 1.0},
        "rcan": {"arch": "rcan", "scale": 4, "in_ch": 3, "n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16},
        "safmn": {"arch": "safmn", "scale": 4, "dim": 36, "n_blocks": 8, "ffn_scale": 2.0},
        "realcugan": {"arch": "realcugan", "scale": 4, "in_ch": 3, "out_ch": 3, "pro": False, "fast": False},
        "omnisr": {"arch": "omnisr", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 64, "block_num": 1, "pe": True,
                   "window_size": 8, "res_num": 5, "bias": True},
        "esrgan_plus": {"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32,
                        "plus": True},
        "swinir": lambda: swinir_spec("swinir_m", scale=4, use_chk=remat),
        "hat": lambda: hat_spec("hat_s", scale=4, use_chk=remat),
        # wave 3 transformers, their standard x4 (DEFAULTS): DRCT 180/6x6 window 16, traiNNer-redux's SRFormer 180/6x6
        # window 24, ATD 210/6x6 window 16, Swin2SR-M 180/6x6 window 8, RGT 180/8x6 windows 8x32
        **{n: {"arch": n, "scale": 4, "use_chk": remat} for n in ("drct", "srformer", "atd", "swin2sr", "rgt")},
    }
    spec = specs[name]
    return spec() if callable(spec) else spec


def _time(fn, steps):
    """Seconds per call after two warm-up calls (the first compiles): the median of `steps` calls."""
    return timeit(fn, warmup=2, repeats=steps)


def bench_jax(spec, x, y, steps, dtype, memory_only=False):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxsr import archs

    model = archs.build(spec, dtype=jnp.dtype(dtype))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    fwd = nnx.jit(lambda m, v: m(v))
    t_fwd = None if memory_only else _time(lambda: fwd(model, xj).block_until_ready(), steps)
    model.train()
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-4, b1=0.9, b2=0.99)

    @jax.jit
    def step(params, rest, opt, x, y):
        def loss_fn(p):
            m = nnx.merge(gd, p, rest, copy=True)
            return jnp.mean(jnp.abs(m(x) - y)), nnx.state(m, nnx.Not(nnx.Param))

        (loss, rest2), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), rest2, opt, loss

    st = [params, rest, tx.init(params)]
    temp = step.lower(*st, xj, yj).compile().memory_analysis().temp_size_in_bytes / 2**30
    if memory_only:
        return None, None, temp

    def run():
        st[0], st[1], st[2], loss = step(st[0], st[1], st[2], xj, yj)
        loss.block_until_ready()

    return t_fwd, _time(run, steps), temp


def bench_trainer(spec, x, y, steps):
    """The trainer's own L1 + Adam step (`jaxsr.train.kinds.sr`'s builders) over the devices run_train sets up on this
    host (`jaxsr.parallel.use_cpu_cores`: one XLA:CPU device per core, the batch split over them), on the kernels
    XLA_FLAGS names (main() runs both of run_train's candidates), else the family's `jaxsr.parallel.CPU_KERNELS` entry."""
    from common import config, train_step
    from ml_collections import ConfigDict

    from jaxsr import parallel

    cfg = config("rrdb", len(x), x.shape[1], degrade=False)
    cfg.model = ConfigDict(spec)
    mesh = parallel.make_mesh()
    state, step, feature_params = train_step(cfg, mesh)
    batch = parallel.global_batch(mesh, {"gt": y, "lq": x})
    holder = [state]

    def run():
        holder[0], m = step(holder[0], batch, feature_params)
        m["loss"].block_until_ready()

    return None, _time(run, steps), None


def bench_torch(path, x, y, steps, dtype, remat=False, remat_torch=True, nchw=False):
    import conftest  # noqa: F401  (torchvision stub for spandrel)
    import spandrel
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = spandrel.ModelLoader().load_from_file(path).model.to(dev)
    for mod in m.modules():  # the block groups check these flags in their forward (RGT's is use_chk)
        for flag in ("use_checkpoint", "use_chk"):
            if remat and remat_torch and hasattr(mod, flag):
                setattr(mod, flag, True)
    # the NHWC arrays transposed have channels_last strides, which torch's convolutions keep; NCHW copies them
    xt, yt = (torch.from_numpy(a.transpose(0, 3, 1, 2)).to(dev) for a in (x, y))
    if nchw:
        xt, yt = xt.contiguous(), yt.contiguous()
    if dev == "cuda":
        m, xt, yt = (t.to(memory_format=torch.channels_last) for t in (m, xt, yt))
    amp = dtype == "bfloat16"

    def fwd():
        with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            m.eval()(xt)
        if dev == "cuda":
            torch.cuda.synchronize()

    t_fwd = _time(fwd, steps)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def step():
        m.train()
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            loss = (m(xt).float() - yt).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()

    return t_fwd, _time(step, steps)


def one(a):
    """Measure one (architecture, implementation) in this process and print its RESULT line."""
    import numpy as np
    from common import photos

    spec = standard_spec(a.arch, a.remat)
    s = spec["scale"]
    y = photos(a.batch, a.lr * s)
    x = y.reshape(a.batch, a.lr, s, a.lr, s, 3).mean((2, 4)).astype(np.float32)
    if a.only == "jax":
        t = bench_jax(spec, x, y, a.steps, a.dtype, a.memory)
    elif a.only == "trainer":
        t = bench_trainer(spec, x, y, a.steps)
    else:
        t = bench_torch(a.export, x, y, a.steps, a.dtype, a.remat, a.arch not in NO_TORCH_REMAT, a.torch_nchw)
    print("RESULT " + json.dumps({"fwd": t[0], "train": t[1], "temp": t[2] if len(t) > 2 else None,
                                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def memory_table(a, table):
    """XLA's compiled temp memory of jaxsr's train step per architecture, remat off and on, each in its own process
    (the memory schedule remat runs under is process-wide)."""
    rows = []
    for name in a.archs.split(","):
        temps = []
        for remat in ([], ["--remat"]):
            cmd = [sys.executable, __file__, "--only", "jax", "--memory", "--arch", name, "--batch", str(a.batch), "--lr",
                   str(a.lr), "--dtype", a.dtype] + remat
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            temps.append(json.loads(line[0][7:])["temp"])
        rows.append([name, f"{temps[0]:.2f}", f"{temps[1]:.2f}", f"{temps[1] / temps[0]:.2f}"])
        print(rows[-1], flush=True)
    print(f"\nbatch {a.batch}, LR {a.lr}, {a.dtype}: XLA's compiled temp memory (GiB) of jaxsr's train step")
    print(table(rows, ["arch", "no remat", "remat", "ratio"]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--archs", default="compact,span,realplksr,esrgan_plus,swinir,hat")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--remat", action="store_true", help="gradient checkpointing per block (the transformers), both sides where the reference can")
    p.add_argument("--memory", action="store_true",
                   help="only XLA's compiled temp memory of jaxsr's train step, remat off and on (no timing, no torch)")
    p.add_argument("--trainer", action="store_true",
                   help="also the trainer's own step as run_train sets it up on this host (a CPU: one device per core)")
    p.add_argument("--only", choices=["jax", "trainer", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--arch", help=argparse.SUPPRESS)
    p.add_argument("--export", help=argparse.SUPPRESS)
    p.add_argument("--torch-nchw", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.only:
        from jaxsr import hostmem, parallel

        if a.only != "torch":
            parallel.use_memory_schedule(standard_spec(a.arch, a.remat))  # as run_train does
            parallel.use_in_place_updates()
        if a.only == "trainer":  # as run_train sets up a CPU host for this model
            hostmem.reexec_with_huge_pages()
            print(f"trainer: {parallel.use_cpu_cores(a.batch)} CPU devices, XLA:CPU kernel flag "
                  f"{parallel.use_cpu_kernels(standard_spec(a.arch)['arch'])}, {hostmem.chosen() or 'no huge pages'}",
                  file=sys.stderr)
        return one(a)
    from common import table

    from jaxsr import archs, parallel, weights
    from jaxsr.train import cpu_kernels

    if a.memory:
        return memory_table(a, table)
    import torch

    on_cpu = not torch.cuda.is_available()  # on a GPU torch runs channels_last (bench_torch)
    rows = []
    for name in a.archs.split(","):
        spec = standard_spec(name, a.remat)
        path = os.path.join(tempfile.mkdtemp(), f"{name}.pth")
        weights.export(archs.build(spec), spec, path)
        res = {}
        runs = {"jax": [], "torch": [], "torch_nchw": ["--torch-nchw"], "trainer": [], "trainer_entry": []}
        # a family whose XLA:CPU kernels run_train times on the host: both settings, the one its rule would pick kept
        entry = parallel.CPU_KERNELS.get(spec["arch"]) if on_cpu and a.trainer else None
        flags = {"trainer": parallel.YNNPACK, "trainer_entry": parallel.CPU_KERNEL_SETTINGS[entry][0]} if entry else {}
        for run in (["jax", "torch"] + (["torch_nchw"] if on_cpu else []) + (["trainer"] if a.trainer else []) +
                    (["trainer_entry"] if entry else [])):
            impl = run.split("_")[0]
            cmd = [sys.executable, __file__, "--only", impl, "--arch", name, "--export", path, "--batch", str(a.batch),
                   "--lr", str(a.lr), "--steps", str(a.steps), "--dtype", a.dtype] + (["--remat"] if a.remat else [])
            env = dict(os.environ)
            if run in flags:
                env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags[run]}".strip()
            out = subprocess.run(cmd + runs[run], capture_output=True, text=True, cwd=ROOT, env=env)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                sys.exit(f"{name} {run} failed:\n{out.stderr[-3000:]}")
            res[run] = json.loads(line[0][7:])
        layout = "NCHW" if on_cpu and res["torch_nchw"]["train"] < res["torch"]["train"] else "channels_last"
        j, t = res["jax"], res["torch_nchw" if layout == "NCHW" else "torch"]
        rows.append([name, f"{a.batch / j['fwd']:.2f}", f"{a.batch / t['fwd']:.2f}", f"{t['fwd'] / j['fwd']:.2f}",
                     f"{a.batch / j['train']:.2f}", f"{a.batch / t['train']:.2f}", f"{t['train'] / j['train']:.2f}",
                     f"{j['rss']:.1f}", f"{t['rss']:.1f}", f"{j['temp']:.2f}"])
        if a.trainer:
            tr, kernels = res["trainer"], "ynnpack"
            if entry and cpu_kernels.other_wins(tr["train"], res["trainer_entry"]["train"]):
                tr, kernels = res["trainer_entry"], entry
            rows[-1] += [f"{a.batch / tr['train']:.2f}", f"{t['train'] / tr['train']:.2f}", f"{tr['rss']:.1f}", kernels]
        rows[-1].append(layout)
        print(rows[-1], flush=True)
    print(f"\nbatch {a.batch}, LR {a.lr}, {a.dtype}, remat={a.remat} (torch without it for {', '.join(NO_TORCH_REMAT)}); img/s; "
          "ratio = jaxsr / torch (higher is faster); peak RSS GiB per process; XLA's compiled temp memory of jaxsr's step")
    print(table(rows, ["arch", "fwd jaxsr", "fwd torch", "ratio", "train jaxsr", "train torch", "ratio", "RSS jaxsr",
                       "RSS torch", "temp jaxsr"] + (["train trainer", "ratio", "RSS trainer", "kernels"] if a.trainer else [])
                + ["torch layout"]))


if __name__ == "__main__":
    main()
