"""The training command line: `python run_train.py --config configs/x4.py [--config.<field>=<value> ...]` from a
checkout, `jaxsr-train --config x4 ...` from an installed jaxsr (a recipe by name or path).

Rerunning the same command on the same --workdir resumes from the latest complete checkpoint. --config also takes
a run's frozen config.json (or a YAML file) to rerun it exactly.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "a recipe in configs/ (a Python file with get_config())", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run folder (default: runs/<config name>)")
_PRINT = flags.DEFINE_bool("print_config", False, "print the resolved config as JSON and exit")
_COORD = flags.DEFINE_string("coordinator_address", None, "multi-process runs without a cluster manager: host:port of process 0")
_NPROC = flags.DEFINE_integer("num_processes", None, "with --coordinator_address: the number of processes")
_PID = flags.DEFINE_integer("process_id", None, "with --coordinator_address: this process's index")
_RESUME = flags.DEFINE_string("resume_from", None, "continue from this checkpoint (a step of the workdir, or a checkpoint "
                              "folder); later checkpoints and exports are moved aside, never deleted")
_MAX_STEPS = flags.DEFINE_integer("max_steps", None, "stop at this step (sets train.stop_at; the lr schedule keeps total_steps)")
_FAST = flags.DEFINE_bool("fast_dev_run", False, "check the whole recipe end to end in a temporary folder (two steps, "
                          "validation on one image, checkpoint save and restore, exports), then remove it")
flags.mark_flag_as_required("config")
FROM_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")  # jaxsr.train.config.get_config
RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


def _quiet_closed_loops(unraisable):
    """After a damaged checkpoint fails to restore, TensorStore's pending reads call back into orbax's closed event
    loop, dozens of times; those are not errors of this run (the resume falls back and says so)."""
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def main(argv):
    # keep JAX's backend probing and orbax's thread tracebacks out of the console: failures reach it as one line
    logging.set_verbosity(logging.FATAL)
    sys.unraisablehook = _quiet_closed_loops
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; overrides look like --config.optim.lr=1e-4")
    from jaxsr import parallel
    from jaxsr.errors import JaxsrError
    from jaxsr.train.config import resolve
    from jaxsr.train.loop import resolve_model

    workdir = _WORKDIR.value or os.path.join("runs", os.path.splitext(os.path.basename(_config_name()))[0])
    try:
        cfg = resolve(_CONFIG.value)
        if _MAX_STEPS.value is not None:
            cfg.train.stop_at = _MAX_STEPS.value
            cfg = resolve(cfg)
        cfg = resolve_model(cfg, None if _FAST.value else workdir)
    except JaxsrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # config_flags defers a config file that failed to load until its first use
        print(f"error: cannot load the config {_config_name()}: {_root_cause(e)}", file=sys.stderr)
        return 2
    if _PRINT.value:
        print(cfg.to_json_best_effort(indent=2))
        return 0

    if cfg.model.get("use_chk"):  # remat: on CPU it saves memory only under XLA:CPU's memory schedule
        parallel.use_memory_schedule()
    if not (_COORD.value or parallel.cluster_detected()):
        parallel.use_cpu_cores(cfg.train.batch_size)  # on a CPU host, data parallel over its cores
    parallel.initialize(_COORD.value, _NPROC.value, _PID.value)  # TPU pods / SLURM are detected
    from jaxsr.train.logger import record_error
    from jaxsr.train.loop import Trainer, fast_dev_run

    try:
        if _FAST.value:
            fast_dev_run(cfg)
            return 0
        trainer = Trainer(cfg, workdir, _RESUME.value)
        trainer.run()
        if trainer.stop_requested == "SIGINT":
            return 130
    except JaxsrError as e:
        print(f"error: {e}", file=sys.stderr)
        record_error(e)
        return 2
    except OSError as e:
        ckpts = os.path.join(workdir, "checkpoints")
        kept = "; the last complete checkpoint in it is intact" if os.path.isdir(ckpts) and os.listdir(ckpts) else ""
        print(f"error: {e.strerror or e} ({e.filename or workdir}){kept}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


def _root_cause(e):
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    return f"{type(e).__name__}: {e}" if isinstance(e, SyntaxError) else str(e).strip().splitlines()[-1].strip()


def _try_flags(argv):
    """The error that parsing `argv` alone gives (None if it parses), on flags of their own."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    saved, sys.argv = sys.argv, list(argv)  # config_flags finds its overrides in sys.argv
    try:
        fv(argv)
    except Exception as e:
        return e
    finally:
        sys.argv = saved
    return None


def _override_problem(override, err):
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    if isinstance(err, (KeyError, AttributeError)):
        return f"the config has no field {override.split('=')[0][len('--config.'):]}"
    return _root_cause(err).strip('"')


def _flag_error(argv, e):
    """One line for a command line that does not parse: a config file that does not load, or the bad overrides."""
    config = next((argv[i + 1] if a == "--config" and i + 1 < len(argv) else a.split("=", 1)[1]
                   for i, a in enumerate(argv) if a == "--config" or a.startswith("--config=")), None)
    if config and _try_flags([argv[0], "--config", config]) is not None:
        return f"cannot load the config {config}: {_root_cause(_try_flags([argv[0], '--config', config]))}"
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    bad = [(a, err) for a in overrides if (err := _try_flags([argv[0], "--config", config, a])) is not None] if config else []
    if bad:
        return "; ".join(f"cannot apply {a}: {_override_problem(a, err)}" for a, err in bad) + \
            ". Run with --print_config to see the fields and their types"
    return f"{e}\nusage: python run_train.py --config configs/x4.py [--config.<field>=<value> ...] [--workdir DIR]"


def _config_name():
    """The config file the user gave (a JSON/YAML one is read through jaxsr.train.config.get_config)."""
    name = flags.FLAGS["config"].config_filename
    return name.split(":", 1)[1] if name.startswith(FROM_FILE + ":") else name


def _config_path(value):
    """What config_flags loads for a --config value: a recipe by name (x4), a run's config.json/YAML through
    jaxsr.train.config.get_config, or the path as given."""
    recipe = os.path.join(RECIPES, value + ".py")
    if not os.path.exists(value) and os.sep not in value and os.path.exists(recipe):
        return recipe
    if value.endswith((".json", ".yaml", ".yml")):
        return f"{FROM_FILE}:{os.path.abspath(value)}"
    return value


def _from_file(argv):
    """argv with its --config value turned into what config_flags loads (`_config_path`)."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--config" and i + 1 < len(out):
            out[i + 1] = _config_path(out[i + 1])
        elif a.startswith("--config="):
            out[i] = "--config=" + _config_path(a.split("=", 1)[1])
    return out


def _parse_flags(argv):
    """absl's flag parsing, with a config that does not load or a bad override turned into one line."""
    argv = _from_file(argv)
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # absl, ml_collections and the recipe itself raise many kinds
        print(f"error: {_flag_error(argv, e)}", file=sys.stderr)
        sys.exit(2)


def run():
    """The console script `jaxsr-train` (and run_train.py)."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
