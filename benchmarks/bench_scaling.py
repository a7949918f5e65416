"""Data-parallel scaling of the train step over 1, 2, 4... devices, on the trainer's own path (not a test).

    python benchmarks/bench_scaling.py [--devices 1,2,4] [--per-device-batch 2 | --global-batch 8] [--lr-size 32]
                                       [--steps 3] [--degrade] [--cpu-devices]

Each device count runs in its own process, exactly as the trainer does it: the state replicated over a 'data'
mesh, each batch assembled with jax.make_array_from_process_local_data, one jit with the state donated.

--per-device-batch (weak scaling: the global batch grows with the devices) is the real-hardware check: with one
GPU/TPU per device the step time should stay flat, "step vs 1 device" within 1.1x.
--global-batch (strong scaling: the same work split over more devices) is the check for --cpu-devices, where the
devices are XLA:CPU devices forced onto this machine (--xla_force_host_platform_device_count) and share its
cores: there img/s stays flat when splitting the batch and all-reducing the gradients cost nothing
("img/s vs 1 device" within 10%).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]


def run_one(a):
    import jax
    from common import config, photos, timeit, train_step

    from jaxsr import parallel

    n = jax.device_count()
    b = a.global_batch or a.per_device_batch * n
    cfg = config("rrdb", b, a.lr_size, a.degrade)
    mesh = parallel.make_mesh()
    state, step, feature_params = train_step(cfg, mesh)
    gt = photos(b, 4 * a.lr_size)
    host = {"gt": gt} if a.degrade else {"gt": gt, "lq": gt.reshape(b, a.lr_size, 4, a.lr_size, 4, 3).mean((2, 4))}
    holder = [state]

    def run():
        holder[0], m = step(holder[0], parallel.global_batch(mesh, host), feature_params)
        return m["loss"]

    t = timeit(run, warmup=2, repeats=a.steps, sync=lambda o: o.block_until_ready())
    print("RESULT " + json.dumps(dict(devices=n, batch=b, step_s=t, kind=jax.devices()[0].device_kind)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--per-device-batch", type=int, default=2)
    p.add_argument("--global-batch", type=int, help="fixed global batch (strong scaling) instead")
    p.add_argument("--lr-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--degrade", action="store_true", help="Real-ESRGAN degradations in the step")
    p.add_argument("--cpu-devices", action="store_true", help="force N XLA:CPU devices onto this machine")
    p.add_argument("--only", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.only:
        return run_one(a)
    from common import table

    rows, base = [], None
    for n in (int(v) for v in a.devices.split(",")):
        env = dict(os.environ)
        if a.cpu_devices:
            env["JAX_PLATFORMS"] = "cpu"
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(n)))
        args = [sys.executable, os.path.abspath(__file__), "--only", str(n), "--per-device-batch",
                str(a.per_device_batch), "--lr-size", str(a.lr_size), "--steps", str(a.steps)]
        args += ["--global-batch", str(a.global_batch)] if a.global_batch else []
        out = subprocess.run(args + (["--degrade"] if a.degrade else []), env=env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{n} devices failed:\n{out.stderr[-3000:]}")
        r = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:])
        base = base or r
        ips = r["batch"] / r["step_s"]
        rows.append([r["devices"], r["batch"], f"{r['step_s']:.3f}", f"{r['step_s'] / base['step_s']:.2f}x",
                     f"{ips:.2f}", f"{ips / (base['batch'] / base['step_s']):.2f}x"])
    per = f"global batch {a.global_batch}" if a.global_batch else f"{a.per_device_batch} per device"
    print(f"RRDB x4 train step, LR {a.lr_size}, {per}, {r['kind']}"
          f"{' (forced XLA:CPU devices sharing ' + str(os.cpu_count()) + ' cores)' if a.cpu_devices else ''}")
    print(table(rows, ["devices", "global batch", "step s", "step vs 1 device", "img/s", "img/s vs 1 device"]))


if __name__ == "__main__":
    main()
