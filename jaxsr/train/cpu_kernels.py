"""config.cpu_kernels='auto': which XLA:CPU kernels a run trains on, chosen on the host that trains.

For some families the fastest setting depends on the CPU (docs/performance.md: MoSR's train step was 11% faster with
only its matmuls on YNNPACK on one 2-core machine and 34% slower so on another). XLA reads the setting once per
process, so each candidate is timed in a process of its own: the run's own kind, config, batch and devices, one step
to compile and up to STEPS timed on one batch of the run's data. The choice is cached per host (CPU model, cores, jaxlib)
and config, and frozen in the run's config.json: a resume compiles the same programs and continues bit for bit.

    python -m jaxsr.train.cpu_kernels CONFIG_JSON SETTING [PLATFORM DEVICES]   (the timing process; prints one line)
"""
import contextlib
import hashlib
import json
import os
import platform as host_platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata, util

from jaxsr import parallel

STEPS = 2  # timed steps after the compiling one; the fastest counts
BUDGET_S = 20  # ...but no more once the timed steps have taken this long (a large batch on a CPU: one is enough)
CLEAR = 0.03  # another setting must be this much faster than the default to be chosen
CLOSE = 0.15  # a win by less than this is timed once more, in the other order (single runs vary by up to ~14%)
RESULT = "CPU_KERNELS_STEP_S "


def other_wins(default_s, other_s):
    """Whether the other setting's step time beats the default's by CLEAR (the rule run_train and the benchmarks use)."""
    return other_s <= (1 - CLEAR) * default_s


def cache_path():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "jaxsr", "cpu_kernels.json")


def host():
    """The CPU, its cores and the jaxlib: what the timing holds for."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    cpu = fields.get("model name") or host_platform.processor() or host_platform.machine()
    if "cpu family" in fields:
        cpu += f" (family {fields['cpu family']}, model {fields.get('model')}, stepping {fields.get('stepping')})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, jaxlib {metadata.version('jaxlib')}"


# fields that do not change the train step's programs: a rerun that changes only these reuses the timing
NOT_IN_STEP = ("name", "seed", "init_weights", "init_strict", "cpu_kernels", "val.", "log.", "export.", "train.")


def config_key(cfg):
    from jaxsr.train.config import flatten

    fields = {k: v for k, v in flatten(json.loads(cfg.to_json_best_effort())).items()
              if k == "train.batch_size" or not k.startswith(NOT_IN_STEP)}
    # the schedule the step was timed under, which a later version's table may change
    fields["memory schedule"] = parallel.memory_schedule_reason(cfg.model) is not None
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_cache():
    try:
        with open(cache_path()) as f:
            cache = json.load(f)
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: timed again and rewritten


def _write_cache(key, entry):
    """Add one entry (atomically: another run may read the file meanwhile). Returns a problem, or None."""
    path = cache_path()
    cache = _read_cache()
    cache[key] = entry
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), delete=False, suffix=".tmp") as f:
            json.dump(cache, f, indent=1)
        os.replace(f.name, path)
    except OSError as e:
        return f"not cached ({e.strerror or e}: {path})"
    return None


def _time(cfg, name, platform, devices):
    """Seconds a train step takes under setting `name`, in a fresh process; or (None, why it failed)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.json")
        with open(path, "w") as f:
            f.write(cfg.to_json_best_effort())
        root = os.path.dirname(os.path.dirname(os.path.abspath(parallel.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        r = subprocess.run([sys.executable, "-m", "jaxsr.train.cpu_kernels", path, name, platform or "", str(devices or "")],
                           capture_output=True, text=True, env=env, cwd=os.getcwd())
    line = [x for x in r.stdout.splitlines() if x.startswith(RESULT)]
    if r.returncode or not line:
        last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        return None, last
    return float(line[-1][len(RESULT):]), None


@contextlib.contextmanager
def _compile_cache():
    """A persistent compilation cache the timing processes share (the user's, else a temporary one), so that a second
    round reads the programs the first compiled instead of compiling them again."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="jaxsr-cpu-kernels-") as tmp:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tmp
        try:
            yield
        finally:
            del os.environ["JAX_COMPILATION_CACHE_DIR"]


def _accelerator_plugin():
    """Whether JAX may find a GPU or TPU here (a PJRT plugin or libtpu is installed), without starting a backend."""
    return bool(metadata.entry_points(group="jax_plugins")) or util.find_spec("libtpu") is not None


def choose(cfg, workdir, fast=False, multi=False, platform=None, devices=None, say=print):
    """The setting `cfg` trains on (a name of parallel.CPU_KERNEL_SETTINGS, or 'auto' where the user's XLA_FLAGS
    decide), put in effect with parallel.use_cpu_kernels. In order: the user's XLA_FLAGS; an explicit cpu_kernels; the
    workdir's config.json on a resume; this host's cached timing; timing now (`say` tells the user first); else the
    family's CPU_KERNELS entry. `fast` (--fast_dev_run) does not time; `multi` (several processes) takes neither cache
    nor timing, so that every process compiles the same programs. `platform`, `devices`: --platform, --devices."""
    arch = cfg.model.get("arch")
    if parallel.kernel_flags_given():
        parallel.use_cpu_kernels(arch)
        return "auto"
    saved = _saved(workdir)
    if cfg.cpu_kernels != "auto" and cfg.cpu_kernels != saved:
        parallel.use_cpu_kernels(arch, cfg.cpu_kernels, "config.cpu_kernels")
        return cfg.cpu_kernels
    if saved not in (None, "auto"):
        parallel.use_cpu_kernels(arch, saved, "kept from this run's config.json")
        return saved
    if saved == "auto":
        return _fallback(arch, "this run's config.json records none (XLA_FLAGS chose, or it predates cpu_kernels)")
    fallback = parallel.CPU_KERNELS.get(arch)
    if fallback is None:
        return _fallback(arch, None)
    if multi:
        return _fallback(arch, "not timed: a multi-process run takes the same setting in every process")
    key = f"{host()} | {cfg.kind} {arch} | {config_key(cfg)}"
    entry = _read_cache().get(key)
    if isinstance(entry, dict) and entry.get("choice") in parallel.CPU_KERNEL_SETTINGS:
        parallel.use_cpu_kernels(arch, entry["choice"], f"timed on this host before: {_seconds(entry.get('step_s', {}))}")
        return entry["choice"]
    not_timed = ("--fast_dev_run" if fast else f"--platform {platform}" if platform not in (None, "cpu") else
                 "a GPU/TPU plugin is installed; --platform cpu times it" if platform is None and _accelerator_plugin()
                 else None)
    if not_timed:
        return _fallback(arch, f"not timed: {not_timed}")
    names = ["ynnpack", fallback]
    say(f"XLA:CPU: timing {arch}'s train step under {' and '.join(repr(n) for n in names)} on this host (once per host and "
        "config, a compile each; --config.cpu_kernels=NAME skips it)")
    times = {}
    with _compile_cache():
        for order in (names, names[::-1]):
            for name in order:
                t, problem = _time(cfg, name, platform, devices)
                if t is None:
                    return _fallback(arch, f"timing {name!r} failed: {problem}")
                say(f"XLA:CPU: {name!r}: {t:.3g} s a step")
                times[name] = min(t, times.get(name, t))
            default_s, other_s = times[names[0]], times[names[1]]
            if not other_wins(default_s, other_s) or other_s <= (1 - CLOSE) * default_s:
                break  # a clear result; a narrow win is timed once more, in the other order, before it is taken
    best = names[1] if other_wins(default_s, other_s) else names[0]
    problem = _write_cache(key, {"choice": best, "step_s": times, "when": time.strftime("%Y-%m-%d %H:%M:%S")})
    parallel.use_cpu_kernels(arch, best, f"timed on this host: {_seconds(times)}" + (f"; {problem}" if problem else ""))
    return best


def _saved(workdir):
    """cpu_kernels of the workdir's config.json ('auto' where it has none), or None where there is no run yet."""
    path = os.path.join(workdir, "config.json") if workdir else None
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            name = json.load(f).get("cpu_kernels", "auto")
        return name if name in parallel.CPU_KERNEL_SETTINGS else "auto"
    except (OSError, ValueError):
        return None  # the run's own checks say what is wrong with it


def _seconds(times):
    return ", ".join(f"{name} {t:.3g} s a step" for name, t in times.items())


def _fallback(arch, why):
    """The family's CPU_KERNELS setting, else the default (said only for the families in CPU_KERNELS)."""
    parallel.use_cpu_kernels(arch, None, why or "it trains faster so")
    return parallel.CPU_KERNELS.get(arch, "ynnpack")


def _time_here(config_json, name, platform, devices):
    """The timing process: set up as run_train does, build the kind, train up to STEPS + 1 steps on one batch."""
    from jaxsr.train import kinds
    from jaxsr.train.config import get_config, resolve

    cfg = resolve(get_config(config_json))
    parallel.use_memory_schedule(cfg.model)
    parallel.use_in_place_updates()
    parallel.use_cpu_kernels(cfg.model.get("arch"), name)
    if not devices:
        parallel.use_cpu_cores(cfg.train.batch_size)
    parallel.choose(platform or None, int(devices) if devices else None)
    import jax

    with tempfile.TemporaryDirectory() as workdir:
        mesh = parallel.make_mesh()
        kind = kinds.get(cfg.kind)(cfg, workdir, mesh, None)
        batch = parallel.global_batch(mesh, next(kind.data.train))
        state, times = kind.state, []
        for step in range(STEPS + 1):
            t = time.perf_counter()
            state, metrics = kind.train_step(state, batch, step)
            jax.block_until_ready((state, metrics))
            times.append(time.perf_counter() - t)
            if sum(times[1:]) >= BUDGET_S:
                break
        kind.data.train.close()
    print(f"{RESULT}{min(times[1:])}", flush=True)


if __name__ == "__main__":
    _time_here(*sys.argv[1:3], *(sys.argv[3:5] or ["", ""]))
