"""Data parallelism over a device mesh, one code path for 1 device, 8, or a pod.

The mesh has one 'data' axis with Auto axis types: the batch is sharded along it, the train state is
replicated, and XLA inserts the gradient all-reduce. Multi-process runs (TPU pods, several GPU hosts)
feed each process's share of the global batch with `jax.make_array_from_process_local_data`.
On a CPU host the same mesh spans one XLA:CPU device per core (use_cpu_cores), set up before jax starts,
like the XLA:CPU memory schedule for remat models, MoSR and RealPLKSR (use_memory_schedule), the train state's update
in place (use_in_place_updates) and the kernels of the architectures that train faster with other XLA:CPU kernels
than the default (use_cpu_kernels).
"""
import logging
import os
import subprocess
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


PLATFORMS = ("cpu", "gpu", "tpu")
_chosen = None  # the first N local devices where --devices asked for them (choose), else None: every device
CPU_CHOICES = []  # what the use_* set-up functions below chose, and why: logged on a CPU


def mesh_devices():
    """The devices a run trains on: every device of every process, or the ones `choose` picked."""
    return _chosen or jax.devices()


def make_mesh():
    devices = mesh_devices()
    return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def choose(platform=None, count=None):
    """run_train's --platform (cpu, gpu or tpu: the JAX platform, as JAX_PLATFORMS) and --devices N (the first N
    local devices; on a CPU host, N XLA:CPU devices). Call before jax starts a backend, in place of use_cpu_cores
    when N is given. Raises ConfigError naming the flag where the choice cannot be had."""
    global _chosen
    from jaxsr.errors import ConfigError

    if platform is not None:
        if platform not in PLATFORMS:
            raise ConfigError(f"--platform must be one of {', '.join(PLATFORMS)}, got {platform!r}")
        jax.config.update("jax_platforms", platform)
    if count is not None:
        if count < 1:
            raise ConfigError(f"--devices must be at least 1, got {count}")
        if platform in (None, "cpu") and not _backends_started():
            jax.config.update("jax_num_cpu_devices", count)  # used only where the CPU is the platform
    try:
        local = jax.local_devices()
    except RuntimeError as e:
        raise ConfigError(f"--platform {platform}: JAX cannot start it here ({str(e).splitlines()[0].split(' (set ')[0]}); "
                          "install the JAX build for it (JAX's installation guide), or leave --platform out") from None
    if count is not None:
        if jax.process_count() > 1:
            raise ConfigError("--devices is for a single-process run; a multi-process run trains on every device")
        if count > len(local):
            raise ConfigError(f"--devices {count}: this host has {len(local)} {local[0].platform} device(s)")
        _chosen = local[:count]


def replicated(mesh):
    return NamedSharding(mesh, P())


def batch_sharding(mesh):
    return NamedSharding(mesh, P("data"))


def global_batch(mesh, host_batch):
    """This process's slice of the batch (numpy, leading axis) -> one global array sharded on 'data'."""
    sh = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sh, np.asarray(x)), host_batch)


def replicate(mesh, tree):
    return jax.device_put(tree, replicated(mesh))


def is_main_process():
    return jax.process_index() == 0


def to_host(tree):
    """Numpy copies of (replicated) arrays; works in multi-process runs, where no process sees every shard."""
    def get(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(get(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(get, tree)


def cluster_detected():
    """True under a multi-process launcher that jax.distributed.initialize() auto-detects."""
    env = os.environ
    if "," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True  # a multi-host TPU slice
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(env.get(var, "1") or 1) > 1:
            return True
    return False


def initialize(coordinator_address=None, num_processes=None, process_id=None):
    """Start JAX's multi-controller runtime when this is one process of several; a no-op otherwise.

    Explicit settings (e.g. two GPU hosts without a cluster manager) come from the arguments; TPU pod
    slices, SLURM and Open MPI are detected and left to jax.distributed.initialize()'s own discovery.
    """
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    elif cluster_detected():
        jax.distributed.initialize()


def _backends_started():
    """Whether jax has created its backends (after which XLA settings no longer apply)."""
    from jax._src import xla_bridge

    return getattr(xla_bridge, "backends_are_initialized", lambda: False)()


def use_cpu_cores(batch_size):
    """One XLA:CPU device per core, up to a divisor of the batch. Call before jax starts a backend; returns the count.

    XLA:CPU runs one device's convolutions on about one core, so on a CPU host a data-parallel mesh over the
    cores is what puts them all to work: the RRDB x4 train step (batch 4, LR 32) on 2 cores goes from 0.79 to
    1.32 img/s (benchmarks/bench_scaling.py). Only the CPU backend gets these devices: GPU and TPU hosts train on
    their accelerators as before. A count the user chose (JAX_NUM_CPU_DEVICES or XLA_FLAGS) wins. run_train does
    not call it for multi-process runs, whose batch split is not known yet. Small steps of small models can run faster
    on one device for two cores (SAFMN and SPAN at batch 4, LR 32), but not at their recipes' batches
    (docs/performance.md), so every family gets one per core.
    """
    if jax.config.jax_num_cpu_devices != -1 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    if _backends_started():
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = max(d for d in range(1, min(cores, batch_size) + 1) if batch_size % d == 0)
    jax.config.update("jax_num_cpu_devices", n)
    CPU_CHOICES.append(f"{n} device(s) for {cores} core(s), the batch of {batch_size} split over them "
                       "(a device runs its convolutions on about one core)")
    return n


# XLA:CPU's memory-minimising scheduler, by the flag of newer jaxlibs, then the older (deprecated) one
MEMORY_SCHEDULE = ("--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
                   "--xla_cpu_enable_concurrency_optimized_scheduler=false")


def _set_xla_flag(flag, probe=None):
    """Add `flag` to XLA_FLAGS if this XLA knows it: XLA aborts the process on a flag it does not know, so a short
    subprocess runs `probe` with it first (a probe that fails says the flag would not do its work here). Returns
    whether it was added."""
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, XLA_FLAGS=f"{flags} {flag}".strip(), JAX_PLATFORMS="cpu")
    if subprocess.run([sys.executable, "-c", probe or "import jax; jax.devices()"], env=env, capture_output=True).returncode:
        return False
    os.environ["XLA_FLAGS"] = env["XLA_FLAGS"]
    return True


# the architectures whose train step needs clearly less memory under XLA:CPU's memory schedule than under its default,
# at the same speed (x4, batch 4, LR 32, two devices, pairs in both orders; docs/performance.md): MoSR 64/24 0.29 ->
# 0.21 GiB of temporaries a device, peak RSS 2.13 -> 1.98 GiB (0.85 -> 0.19 before its depthwise gradients were
# written out); RealPLKSR 64/28/17 0.47 -> 0.37, 2.17 -> 1.95 GiB. For SPAN, PLKSR, SAFMN, ESRGAN+ and Compact the two
# were as fast and as large.
MEMORY_SCHEDULE_ARCHS = ("mosr", "realplksr")


def memory_schedule_reason(model):
    """Why the model (a spec or the config's `model` section) trains under XLA:CPU's memory schedule, or None."""
    if model.get("use_chk"):
        return "remat saves memory only under it"
    if model.get("arch") in MEMORY_SCHEDULE_ARCHS:
        return f"{model.get('arch')}'s train step needs less memory so, as fast"
    return None


def use_memory_schedule(model):
    """Make XLA:CPU order each program for low memory rather than concurrency where the model (a spec or the config's
    `model` section) needs it: remat (`use_chk`) or one of MEMORY_SCHEDULE_ARCHS. Call before jax starts a backend.

    XLA:CPU's default scheduler runs recomputations as early as it can, so remat costs time and saves nothing:
    DAT-2's train step (batch 2, LR 64) peaks at 13.6 GiB with remat under it and at 5.6 GiB, 13% faster, under
    the memory scheduler (docs/performance.md). Without remat the default was ~12% faster for RRDB on one machine;
    on another the two ran at the same speed for every family measured, and the memory schedule held MoSR's
    temporaries at about three quarters and RealPLKSR's at four fifths. It goes through XLA_FLAGS, read once per
    process and by XLA:CPU alone (a per-jit compiler option does not reach the scheduler). Returns whether the
    schedule is in effect; the user's XLA_FLAGS win.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_scheduler_type" in flags or "xla_cpu_enable_concurrency_optimized_scheduler" in flags:
        return any(f in flags.split() for f in MEMORY_SCHEDULE)
    why = memory_schedule_reason(model)
    if why is None:
        return False
    if _backends_started():
        logging.getLogger("jaxsr").warning("the XLA:CPU memory schedule must be chosen before jax starts; not set")
        return False
    for flag in MEMORY_SCHEDULE:
        if _set_xla_flag(flag):
            CPU_CHOICES.append(f"the memory-minimising schedule ({why})")
            return True
    logging.getLogger("jaxsr").warning(f"this XLA knows no memory-scheduler flag: the default schedule stays, though {why}")
    return False


IN_PLACE_UPDATES = "--xla_cpu_copy_insertion_use_region_analysis=true"


def use_in_place_updates():
    """Let XLA:CPU update the donated train state in place. Call before jax starts a backend; returns whether it is set.

    The optimizer's new moments are written over the old ones, which the parameter update reads too (it recomputes
    the moments in its own fusion). Two fusions with no data dependence between them: XLA:CPU's default copy
    insertion cannot order them and copies both moments of every parameter at the start of each step (ESRGAN+: 1,543
    copies, 134 MB a step). Its region-based analysis (`--xla_cpu_copy_insertion_use_region_analysis`, the setting
    XLA's own host-offloading client uses) orders the reads first and copies nothing: Compact's trainer step 50-66 ->
    43-46 ms, ESRGAN+'s and RCAN's peak RSS 0.19 GiB less (docs/performance.md). Only buffers change, not the
    arithmetic. The user's XLA_FLAGS win."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_copy_insertion_use_region_analysis" in flags or _backends_started():
        return IN_PLACE_UPDATES in flags.split()
    if not _set_xla_flag(IN_PLACE_UPDATES):
        return False
    CPU_CHOICES.append("the train state updated in place (copy insertion's region analysis: no copy of the optimizer "
                       "state each step)")
    return True


# XLA:CPU hands convolutions, matmuls and reductions to YNNPACK (its library fusions) by default; for the rest it has
# its own (Eigen) kernels, and it can give matmuls (batched ones too, which YNNPACK leaves to Eigen) to oneDNN. Four
# settings: the default spelled out (the same programs), matmuls only, none, and the default with oneDNN's matmuls
YNNPACK = ("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
           "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_REDUCE")
YNNPACK_DOTS = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
NO_YNNPACK = "--xla_cpu_experimental_ynn_fusion_type="
ONEDNN_DOTS = ("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,"
               "LIBRARY_FUSION_TYPE_REDUCE --xla_cpu_use_onednn=true "
               "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
# config.cpu_kernels names them: name -> (the flag, None for this jaxlib's default; what it puts where)
CPU_KERNEL_SETTINGS = {
    "ynnpack": (None, "YNNPACK's convolutions, matmuls and reductions, XLA:CPU's default"),
    "dots": (YNNPACK_DOTS, "convolutions and reductions on XLA's own kernels, matmuls on YNNPACK"),
    "own": (NO_YNNPACK, "XLA's own kernels only"),
    "onednn": (ONEDNN_DOTS, "convolutions and reductions on YNNPACK, matmuls (attention's too) on oneDNN")}
# the architectures whose train step ran faster on some CPU with another setting than the default, measured side by
# side (benchmarks/bench_cpu_kernels.py, docs/performance.md): which one wins depends on the CPU, so run_train times the
# two on the host (jaxsr.train.cpu_kernels) and falls back to this setting where it cannot; the others keep the default
CPU_KERNELS = {"span": "dots", "mosr": "dots", "omnisr": "dots", "hat": "onednn", "srformer": "onednn"}
# the flags that choose kernels: where the user's XLA_FLAGS set any of them, use_cpu_kernels leaves the choice to them
KERNEL_FLAGS = (NO_YNNPACK, "--xla_cpu_use_onednn=", "--xla_cpu_experimental_onednn_fusion_type=")
# a jaxlib built without oneDNN (on ARM, say) accepts its flags and ignores them: the compiled program tells
ONEDNN_PROBE = ("import jax, jax.numpy as jnp; x = jnp.ones((8, 8)); "
                "assert 'onednn_fusion' in jax.jit(jnp.matmul).lower(x, x).compile().as_text()")


def kernel_flags_given():
    """The kernel flags the user's XLA_FLAGS set (a string), or None: where they set any, they decide."""
    given = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith(KERNEL_FLAGS)]
    return " ".join(given) or None


def use_cpu_kernels(arch, name=None, why="it trains faster so"):
    """Run `arch` on the XLA:CPU kernels of setting `name` (CPU_KERNEL_SETTINGS; default: CPU_KERNELS's for the family,
    else XLA:CPU's default), and say so with `why`. Which wins depends on the model and the CPU (docs/performance.md):
    on one machine SPAN's train step went from 0.64x to 1.03x PyTorch's with only its matmuls on YNNPACK and HAT-S's
    5-13% faster with its matmuls on oneDNN, while on another MoSR's and OmniSR's were 34% and 24% faster on the
    default than on that table's pick.
    The kernels sum in another order, so a run keeps its choice (config.cpu_kernels, frozen in config.json). Only
    XLA:CPU reads the flag: GPU and TPU programs are untouched. Call before jax starts a backend; the user's XLA_FLAGS
    win. Returns the flags in effect, or None for the default."""
    given = kernel_flags_given()
    if given:
        CPU_CHOICES.append(f"the kernels XLA_FLAGS chose ({given})")
        return given
    if _backends_started():
        return None
    chosen, name = name, name or CPU_KERNELS.get(arch, "ynnpack")
    flag, what = CPU_KERNEL_SETTINGS[name]
    if flag is None:
        if chosen or arch in CPU_KERNELS:
            CPU_CHOICES.append(f"{arch}: {what} ({why})")
        return None
    if not _set_xla_flag(flag, ONEDNN_PROBE if name == "onednn" else None):
        CPU_CHOICES.append(f"{arch}: {CPU_KERNEL_SETTINGS['ynnpack'][1]} (this jaxlib cannot run {name!r}: {what})")
        return None
    CPU_CHOICES.append(f"{arch}: {what} ({why})")
    return flag
