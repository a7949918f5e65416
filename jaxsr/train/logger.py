"""What a run shows: a console line mirrored with timestamps to train.log, TensorBoard scalars and images, and
every logged value in metrics.jsonl. Only process 0 writes; other processes stay quiet."""
import json
import logging
import os
import resource
import secrets
import sys
import time

import jax
import numpy as np

from jaxsr.files import atomic_write
from jaxsr.imageio import to_u8

log = logging.getLogger("jaxsr")


def setup(workdir, main_process=True):
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    if not main_process:
        log.addHandler(logging.NullHandler())
        return
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    os.makedirs(workdir, exist_ok=True)
    f = logging.FileHandler(os.path.join(workdir, "train.log"))
    f.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(f)


def record_error(message):
    """Put a run's final error line into train.log too (the console has it already)."""
    for h in log.handlers:
        if isinstance(h, logging.FileHandler):
            h.emit(logging.LogRecord(log.name, logging.ERROR, __file__, 0, f"error: {message}", None, None))


class System:
    """What the run costs the machine, for the log line and TensorBoard's system/ scalars: device memory in use and at
    its peak (where the backend reports it: GPU and TPU do, XLA:CPU does not, which `start` says once), the process's
    CPU use and resident memory and the host's RAM in use (psutil where installed, else /proc), and how long each step
    waited for its batch from the host since the last report (`waited`): the number that says whether data bounds
    training."""

    def __init__(self):
        self.wait, self.steps = 0.0, 0
        self.last_wall, self.last_cpu = time.perf_counter(), _process_cpu_seconds()

    def start(self):
        """The first line of a run about what is measured."""
        stats = jax.local_devices()[0].memory_stats() or {}
        if "bytes_in_use" not in stats:
            log.info(f"system: the {jax.default_backend()} backend reports no device memory; the log shows the host's "
                     "(process RSS)")

    def waited(self, seconds):
        self.wait, self.steps = self.wait + seconds, self.steps + 1

    def scalars(self):
        """{device_mem_gib, device_peak_gib (where reported), host_cpu_percent, host_rss_gib, host_ram_used_gib,
        host_ram_percent, data_wait_ms (mean per step since the last call)}."""
        stats = jax.local_devices()[0].memory_stats() or {}
        out = {k: stats[key] / 2**30 for k, key in (("device_mem_gib", "bytes_in_use"), ("device_peak_gib", "peak_bytes_in_use"))
               if key in stats}
        wall, cpu = time.perf_counter(), _process_cpu_seconds()
        out["host_cpu_percent"] = 100 * (cpu - self.last_cpu) / max(wall - self.last_wall, 1e-9)
        used, total = _host_ram_bytes()
        out.update(host_rss_gib=_rss_bytes() / 2**30, host_ram_used_gib=used / 2**30, host_ram_percent=100 * used / total)
        out["data_wait_ms"] = 1000 * self.wait / max(self.steps, 1)
        self.last_wall, self.last_cpu, self.wait, self.steps = wall, cpu, 0.0, 0
        return out

    @staticmethod
    def line(v):
        device = f"device {v['device_mem_gib']:.2f} GiB (peak {v['device_peak_gib']:.2f}) | " if "device_mem_gib" in v else ""
        return (f"{device}host CPU {v['host_cpu_percent']:.0f}%, RSS {v['host_rss_gib']:.2f} GiB, RAM {v['host_ram_percent']:.0f}% | "
                f"data wait {v['data_wait_ms']:.1f} ms/step")


def _process_cpu_seconds():
    """User + system CPU time of this process (all threads)."""
    t = os.times()
    return t.user + t.system


def _rss_bytes():
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _host_ram_bytes():
    """(used, total) RAM of the host: total less what is available, as `free` counts it."""
    try:
        import psutil

        m = psutil.virtual_memory()
        return m.total - m.available, m.total
    except ImportError:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemTotal"] - info["MemAvailable"], info["MemTotal"]


def peak_memory_gib():
    """Peak device memory where the backend reports it (GPU/TPU), else the process's peak RSS."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Progress:
    """it/s and ETA over the steps since the last report."""

    def __init__(self, start_step, total_steps):
        self.total = total_steps
        self.last_step, self.last_time = start_step, time.perf_counter()

    def line(self, step, metrics):
        now = time.perf_counter()
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 86400 * 30 else "--"
        losses = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in ("lr", "grad_norm", "skipped"))
        text = f"step {step}/{self.total} | {rate:.2f} it/s | ETA {eta_s} | {losses} | lr {metrics.get('lr', 0):.3g}"
        return text, rate


class Board:
    """<workdir>/metrics.jsonl and TensorBoard (<workdir>/tensorboard, unless `tensorboard` is False), written by
    process 0 only (`enabled`)."""

    def __init__(self, workdir, enabled=True, resumed_at=None, aside=None, wandb_config=None, tensorboard=True):
        """`resumed_at`: the step a resumed run continues from; later rows and events, logged by the run that was
        stopped, are dropped, so that each step is logged once. `aside`: a folder that keeps the dropped rows (a
        branch abandons real history, which is never deleted). `wandb_config`: the run's config, to mirror the
        TensorBoard logs to Weights & Biases (`log.wandb`)."""
        self.writer, self.jsonl, self.wandb = None, os.path.join(workdir, "metrics.jsonl"), None
        self.enabled = enabled
        if enabled:
            if resumed_at is not None and os.path.exists(self.jsonl):
                with open(self.jsonl) as f:
                    lines = [line for line in f if line.strip()]
                keep = [line for line in lines if json.loads(line)["step"] <= resumed_at]
                if aside and len(keep) < len(lines):
                    os.makedirs(aside, exist_ok=True)
                    atomic_write(os.path.join(aside, "metrics.jsonl"), lambda f: f.writelines(lines), mode="w")
                atomic_write(self.jsonl, lambda f: f.writelines(keep), mode="w")
            purge = None if resumed_at is None else resumed_at + 1
            if wandb_config is not None:
                self.wandb = _wandb_run(workdir, wandb_config)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

    def scalars(self, step, values, prefix="train/"):
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(prefix + k, float(v), step)
        if self.wandb is not None:
            self.wandb.log({prefix + k: float(v) for k, v in values.items()}, step=step)

    def event(self, step, values):
        """A metrics.jsonl row that is not a measurement (e.g. where a run branched)."""
        if self.enabled:
            with open(self.jsonl, "a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")

    def log(self, step, values, prefix="train/"):
        """Scalars to TensorBoard and one metrics.jsonl row: {step, loss, ...} for training, {step, val_psnr, ...}."""
        self.scalars(step, values, prefix)
        if self.enabled:
            key = "" if prefix == "train/" else prefix.replace("/", "_")
            with open(self.jsonl, "a") as f:
                f.write(json.dumps({"step": step, **{key + k: float(v) for k, v in values.items()}}) + "\n")

    def images(self, step, tag, lr, sr, hr):
        """One row per image: LR (nearest-upscaled) | SR | HR, as HWC uint8."""
        if not self.writer and self.wandb is None:
            return
        rows = []
        for a, b, c in zip(lr, sr, hr):
            s = b.shape[0] // a.shape[0]
            up = np.repeat(np.repeat(a, s, 0), s, 1)[: b.shape[0], : b.shape[1]]
            rows.append(np.concatenate([up, b, c[: b.shape[0], : b.shape[1]]], axis=1))
        width = max(r.shape[1] for r in rows)
        grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
        if self.writer:
            self.writer.add_image(tag, to_u8(grid), step, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(to_u8(grid))}, step=step)

    def histogram(self, step, tag, values):
        if self.writer:
            self.writer.add_histogram(tag, np.asarray(values, np.float32).ravel(), step)
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Histogram(np.asarray(values, np.float32).ravel())}, step=step)

    def flush(self):
        if self.writer:
            self.writer.flush()

    def close(self):
        if self.writer:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_run(workdir, cfg):
    """A Weights & Biases run that gets every scalar, image and histogram TensorBoard gets. It keeps its id in the
    workdir, so a resume continues the same run; WANDB_MODE=offline works with no network (`wandb sync` uploads it)."""
    import wandb

    id_file = os.path.join(workdir, "wandb_run_id")
    run_id = open(id_file).read().strip() if os.path.exists(id_file) else secrets.token_hex(4)
    run = wandb.init(project=cfg.log.wandb_project, name=cfg.name, id=run_id, resume="allow", dir=workdir,
                     config=cfg.to_dict())
    if not os.path.exists(id_file):
        atomic_write(id_file, lambda f: f.write(run_id), mode="w")
    return run
