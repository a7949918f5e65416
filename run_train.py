"""Train a super-resolution model: python run_train.py --config configs/x4.py [--config.<field>=<value> ...]

Rerunning the same command on the same --workdir resumes from the latest complete checkpoint.
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
flags.mark_flag_as_required("config")


def main(argv):
    logging.set_verbosity(logging.WARNING)  # keep JAX's backend probing out of the console
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; overrides look like --config.optim.lr=1e-4")
    from jaxsr import parallel
    from jaxsr.errors import JaxsrError
    from jaxsr.train.config import resolve

    try:
        cfg = resolve(_CONFIG.value)
    except JaxsrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if _PRINT.value:
        print(cfg.to_json_best_effort(indent=2))
        return 0
    workdir = _WORKDIR.value or os.path.join("runs", os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0])

    if cfg.model.get("use_chk"):  # remat: on CPU it saves memory only under XLA:CPU's memory schedule
        parallel.use_memory_schedule()
    if not (_COORD.value or parallel.cluster_detected()):
        parallel.use_cpu_cores(cfg.train.batch_size)  # on a CPU host, data parallel over its cores
    parallel.initialize(_COORD.value, _NPROC.value, _PID.value)  # TPU pods / SLURM are detected
    from jaxsr.train.loop import Trainer

    try:
        Trainer(cfg, workdir).run()
    except JaxsrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.strerror or e} ({e.filename or workdir}); the last complete checkpoint is kept", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


def _parse_flags(argv):
    """absl's flag parsing, with a bad override (unknown field, wrong type) turned into a message."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
        bad = [a for a in argv[1:] if a.startswith("--config.")]
        if not bad:
            sys.exit(f"error: {e}\nusage: python run_train.py --config configs/x4.py [--config.<field>=<value> ...] [--workdir DIR]")
        sys.exit(f"error: cannot apply the config overrides {' '.join(bad)}: {str(e).strip(chr(34))}. "
                 "Run with --print_config to see the fields and their types.")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
