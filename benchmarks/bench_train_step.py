"""Train-step throughput: jaxsr against the same model and batch in PyTorch, in one run (not a test).

    python benchmarks/bench_train_step.py [--models rrdb,dat2] [--batch 16] [--lr-size 64] [--steps 5]
                                          [--compile] [--gan] [--peak-tflops 989]

Rows per model: jaxsr L1 step with Real-ESRGAN degradations fused in (rrdb) and on a ready LR batch;
the Real-ESRGAN GAN step (--gan: L1 + VGG19 perceptual + U-Net SN discriminator, random VGG weights);
PyTorch eager (bf16 autocast + channels_last on GPU, fp32 on CPU) and torch.compile (--compile). On a CPU, one more
jaxsr L1 row runs the step as run_train sets it up on this host (`parallel.use_cpu_cores`: one XLA:CPU device per core,
the batch split over them), in its own process, since the device count is fixed when jax starts.
Columns: img/s, peak device memory, model TFLOP/s from docs/performance.md's counts (RRDB 440.6, DAT-2 322, GAN step
1008 GFLOP per training image at LR 64) and, on GPU, the fraction of --peak-tflops. Defaults are the
design's GPU setting (RRDB batch 16, DAT-2 batch 8, LR 64); on a CPU use e.g. --batch 2 --lr-size 32.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]

import jax  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import config, photos, table, timeit, train_step  # noqa: E402

import conftest  # noqa: E402,F401  (torchvision stub for spandrel)
from jaxsr import parallel  # noqa: E402

GFLOP = {"rrdb": 440.6, "dat2": 322.0, "gan": 1008.0}  # per training image at LR 64 (docs/performance.md)


def jaxsr_row(cfg, gt, lq, steps):
    mesh = parallel.make_mesh()
    state, step, feature_params = train_step(cfg, mesh)
    host = {"gt": gt} if cfg.degrade.mode == "realesrgan" else {"gt": gt, "lq": lq}
    batch = parallel.global_batch(mesh, host)
    holder = [state]

    def run():
        holder[0], m = step(holder[0], batch, feature_params)
        return m["loss"]

    return timeit(run, warmup=2, repeats=steps, sync=lambda o: o.block_until_ready())


def trainer_row(name, b, lr_size, steps):
    """(seconds per step, device count) of the L1 step on the CPU devices run_train sets up, from a fresh process."""
    cmd = [sys.executable, __file__, "--trainer-row", "--models", name, "--batch", str(b), "--lr-size", str(lr_size),
           "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        sys.exit(f"the trainer row of {name} failed:\n{out.stderr[-3000:]}")
    r = json.loads(line[0][7:])
    return r["seconds"], r["devices"]


def torch_rows(model_name, gt, lq, steps, gpu, compile_):
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.ESRGAN import ESRGAN

    dev = "cuda" if gpu else "cpu"
    if model_name == "rrdb":
        net = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    else:
        net = DAT(img_size=64, embed_dim=180, depth=[6] * 6, num_heads=[6] * 6, split_size=[8, 32], expansion_factor=2, upscale=4)
    net = net.to(dev).train()
    x = torch.from_numpy(lq.transpose(0, 3, 1, 2)).to(dev)
    y = torch.from_numpy(gt.transpose(0, 3, 1, 2)).to(dev)
    if gpu:
        net, x, y = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last), y.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    sync = (lambda o: torch.cuda.synchronize()) if gpu else (lambda o: None)

    def step_fn(m):
        def run():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
                loss = F.l1_loss(m(x).float(), y)
            loss.backward()
            opt.step()
            return loss
        return run

    rows = [("torch eager" + (" bf16+channels_last" if gpu else " fp32"), timeit(step_fn(net), warmup=2, repeats=steps, sync=sync))]
    if compile_:
        rows.append(("torch.compile", timeit(step_fn(torch.compile(net)), warmup=3, repeats=steps, sync=sync)))
    return rows


def peak_gib(gpu_torch=False):
    if gpu_torch:
        v = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        return f"{v:.1f}"
    stats = jax.local_devices()[0].memory_stats() or {}
    return f"{stats['peak_bytes_in_use'] / 2**30:.1f}" if "peak_bytes_in_use" in stats else "n/a"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="rrdb,dat2")
    p.add_argument("--batch", type=int, default=None, help="default: 16 for rrdb, 8 for dat2")
    p.add_argument("--lr-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--gan", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM: 989)")
    p.add_argument("--trainer-row", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.trainer_row:  # before any jax computation: the device count is fixed when the backend starts
        b = a.batch or (16 if a.models == "rrdb" else 8)
        parallel.use_in_place_updates()
        n = parallel.use_cpu_cores(b) or len(jax.devices())
        gt = photos(b, a.lr_size * 4)
        lq = gt.reshape(b, a.lr_size, 4, a.lr_size, 4, 3).mean(axis=(2, 4))
        print("RESULT " + json.dumps({"seconds": jaxsr_row(config(a.models, b, a.lr_size, False), gt, lq, a.steps), "devices": n}))
        return
    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vgg = None
        if a.gan:
            from test_losses import torch_vgg19_features

            vgg = os.path.join(tmp, "vgg19.pth")
            torch.save({f"features.{k}": v for k, v in torch_vgg19_features().state_dict().items()}, vgg)
        for name in a.models.split(","):
            b = a.batch or (16 if name == "rrdb" else 8)
            gt = photos(b, a.lr_size * 4)
            lq = gt.reshape(b, a.lr_size, 4, a.lr_size, 4, 3).mean(axis=(2, 4))
            gflop = GFLOP[name] * (a.lr_size / 64) ** 2 * b
            variants = [("jaxsr L1", False, False)] + ([("jaxsr L1 + degradations", True, False)] if name == "rrdb" else [])
            variants += [("jaxsr GAN step", True, True)] if a.gan and name == "rrdb" else []
            timed = []
            for label, deg, gan in variants:
                t = jaxsr_row(config(name, b, a.lr_size, deg, gan, vgg), gt, lq, a.steps)
                timed.append((label, t, peak_gib(), GFLOP["gan"] * (a.lr_size / 64) ** 2 * b if gan else gflop))
            if not gpu:
                t, n = trainer_row(name, b, a.lr_size, a.steps)
                timed.append((f"jaxsr L1, trainer's {n} CPU device(s)", t, "n/a", gflop))
            for label, t in torch_rows(name, gt, lq, a.steps, gpu, a.compile):
                timed.append((label, t, peak_gib(True) if gpu else "n/a", gflop))
            ref = next(t for label, t, *_ in timed if label.startswith("torch eager"))
            for label, t, mem, work in timed:
                tflops = work / t / 1e3
                same_work = "GAN" not in label  # the PyTorch rows are L1 steps
                rows.append([name, f"{b}x{a.lr_size}", label, f"{b / t:.2f}", mem, f"{tflops:.3f}",
                             f"{tflops / a.peak_tflops:.1%}" if gpu else "-", f"{ref / t:.2f}x" if same_work else "-"])
    dev = jax.devices()[0].device_kind
    print(f"train step, device {dev}, jax {jax.__version__}, torch {torch.__version__}")
    print(table(rows, ["model", "batch", "impl", "img/s", "peak GiB", "TFLOP/s", "of peak", "vs torch eager"]))


if __name__ == "__main__":
    main()
