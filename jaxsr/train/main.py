"""The training command line: `python run_train.py --config configs/x4.py [--config.<field>=<value> ...]` from a
checkout, `jaxsr-train --config x4 ...` from an installed jaxsr (a recipe by name or path).

Rerunning the same command on the same --workdir resumes from the latest complete checkpoint, and so does
`--workdir DIR` alone (its config.json holds the config of its last start). --config also takes a run's config.json
to rerun it elsewhere, or a YAML/JSON overlay of any fields on a `base:` recipe.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxsr import hostmem
from jaxsr.errors import warnings_as_lines
from jaxsr.train import cmdline

_CONFIG = config_flags.DEFINE_config_file("config", None, "a recipe (a name such as x4, or a Python file with get_config()), "
                                          "a YAML/JSON overlay, or a run's config.json (default: the --workdir's)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run folder (default: runs/<config name>)")
_PRINT = flags.DEFINE_bool("print_config", False, "print the resolved config as JSON and exit")
_COORD = flags.DEFINE_string("coordinator_address", None, "multi-process runs without a cluster manager: host:port of process 0")
_NPROC = flags.DEFINE_integer("num_processes", None, "with --coordinator_address: the number of processes")
_PID = flags.DEFINE_integer("process_id", None, "with --coordinator_address: this process's index")
_RESUME = flags.DEFINE_string("resume_from", None, "continue from this checkpoint (a step of the workdir, or a checkpoint "
                              "folder); later checkpoints and exports are moved aside, never deleted")
_MAX_STEPS = flags.DEFINE_integer("max_steps", None, "stop at this step (sets train.stop_at; the lr schedule keeps total_steps)")
_PLATFORM = flags.DEFINE_string("platform", None, "cpu, gpu or tpu: train on this JAX platform (default: the best one here)")
_DEVICES = flags.DEFINE_integer("devices", None, "train on the first N local devices (default: all; on a CPU host, one per "
                                "core up to a divisor of the batch)")
_PROFILE = flags.DEFINE_string("profile_steps", None, "A:B: write a jax.profiler trace of steps A to B (counted from 1, "
                                "as logged) into <workdir>/profile, for TensorBoard's Profile tab or Perfetto")
_FAST = flags.DEFINE_bool("fast_dev_run", False, "check the whole recipe end to end in a temporary folder (two steps, "
                          "validation on one image, checkpoint save and restore, exports), then remove it")


def _log_line(text):
    """A warning goes to the console and to train.log, as every line of a run does."""
    from jaxsr.train.logger import log

    log.info(text)


def main(argv):
    # keep JAX's backend probing and orbax's thread tracebacks out of the console: failures reach it as one line
    logging.set_verbosity(logging.FATAL)
    sys.unraisablehook = cmdline.quiet_closed_loops
    warnings_as_lines(_log_line)
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; overrides look like --config.optim.lr=1e-4")
    if _RESUME.value is not None and cmdline.given("init_weights"):
        sys.exit("error: --config.init_weights starts a run from weights, --resume_from continues one from its checkpoint: "
                 "give one of them (a warm start goes in a new --workdir)")
    profile = cmdline.step_range(_PROFILE.value, "--profile_steps")
    if profile and _FAST.value:
        sys.exit("error: --fast_dev_run trains in a temporary folder that it removes: profile a run with a --workdir instead")
    workdir = _WORKDIR.value or os.path.join("runs", os.path.splitext(os.path.basename(cmdline.config_name()))[0])
    cfg = cmdline.resolved_config(_CONFIG, _MAX_STEPS.value, None if _FAST.value else workdir, check=_PRINT.value)
    if cfg is None:
        return 2
    if _PRINT.value:
        print(cfg.to_json_best_effort(indent=2))
        return 0

    from jaxsr import parallel
    from jaxsr.train import cpu_kernels

    parallel.use_memory_schedule(cfg.model)  # for remat, and for the models XLA:CPU's default schedule bloats
    parallel.use_in_place_updates()  # no copy of the optimizer state each step
    multi = bool(_COORD.value or parallel.cluster_detected())
    # which XLA:CPU kernels train this model faster here (timed once per host where it depends on the CPU), frozen
    # into config.json so that a resume compiles the same programs
    try:
        cfg.cpu_kernels = cpu_kernels.choose(cfg, None if _FAST.value else workdir, _FAST.value, multi, _PLATFORM.value,
                                             _DEVICES.value)
    except KeyboardInterrupt:
        print("interrupted while timing XLA:CPU's kernels; nothing was written: rerun the same command, or set "
              "--config.cpu_kernels", file=sys.stderr)
        return 130
    if not (multi or _DEVICES.value):
        parallel.use_cpu_cores(cfg.train.batch_size)  # on a CPU host, data parallel over its cores
    parallel.initialize(_COORD.value, _NPROC.value, _PID.value)  # TPU pods / SLURM are detected
    from jaxsr.train import loop

    def train():
        parallel.choose(_PLATFORM.value, _DEVICES.value)
        if _FAST.value:
            loop.fast_dev_run(cfg)
            return 0
        run = loop.start(cfg, workdir, _RESUME.value, profile=profile)
        run.run()
        return 130 if run.stop_requested == "SIGINT" else 0

    return cmdline.exit_code(train, workdir)


def run():
    """The console script `jaxsr-train` (and run_train.py)."""
    hostmem.reexec_with_huge_pages()  # before anything starts: glibc reads it only then
    app.run(main, flags_parser=cmdline.parse_flags)


if __name__ == "__main__":
    run()
