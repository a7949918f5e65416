"""The training command line's plumbing, so that `jaxsr.train.main` reads like Flax's main.py: config files and overrides
that do not parse become one line, and so do the errors of a run (exit code 2; 130 after Ctrl-C)."""
import os
import sys

from absl import flags
from ml_collections import config_flags

FROM_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")  # jaxsr.train.config.get_config


def exit_code(train, workdir):
    """Run `train()` (which returns an exit code) with every failure of a run reported as one line."""
    from jaxsr.errors import JaxsrError
    from jaxsr.train.logger import record_error

    try:
        return train()
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


def resolved_config(config_flag, max_steps, workdir, check=False):
    """The run's config (`jaxsr.train.config.resolve`, train.stop_at from --max_steps, and what the kind infers, such
    as the architecture of init_weights), or None after printing why not. `check`: also what building the kind would
    refuse (`Kind.check`), for --print_config."""
    from jaxsr.errors import JaxsrError
    from jaxsr.train import kinds
    from jaxsr.train.config import resolve

    try:
        cfg = resolve(config_flag.value)
        if max_steps is not None:
            cfg.train.stop_at = max_steps
            cfg = resolve(cfg)
        kind = kinds.get(cfg.kind)
        cfg = kind.resolve_config(cfg, workdir)
        if check:
            kind.check(cfg)
        return cfg
    except JaxsrError as e:
        print(f"error: {_where(config_name(), getattr(e, 'field', None))}{e}", file=sys.stderr)
    except OSError as e:  # config_flags defers a config file that failed to load until its first use
        print(f"error: {_load_problem(config_name(), e)}", file=sys.stderr)
    return None


def step_range(value, flag):
    """(first, last) from 'A:B' (steps counted from 1, A <= B), None for None; exits with one line otherwise."""
    if value is None:
        return None
    first, _, last = value.partition(":")
    if not (first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last)):
        sys.exit(f"error: {flag} takes A:B, the first and last step to trace (1 <= A <= B, e.g. 10:12), got {value!r}")
    return int(first), int(last)


def quiet_closed_loops(unraisable):
    """After a damaged checkpoint fails to restore, TensorStore's pending reads call back into orbax's closed event
    loop, dozens of times; those are not errors of this run (the resume falls back and says so)."""
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def _root_cause(e):
    e = _innermost(e)
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


def _innermost(err):
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    return err


def _where(path, field):
    """'<file>, line N: ' for a field set in a JSON/YAML config file (and not on the command line), else ''."""
    if not field or not path.endswith((".json", ".yaml", ".yml")) or given(field):
        return ""
    import yaml  # JSON is YAML here: the composer keeps each key's line

    try:
        with open(path) as f:
            node = yaml.compose(f)
    except (OSError, ValueError, yaml.YAMLError):
        return ""
    for key in field.split("."):
        found = next(((k, v) for k, v in node.value if k.value == key), None) if isinstance(node, yaml.MappingNode) \
            else None
        if found is None:
            return ""  # the field comes from the defaults or a recipe, not from this file
        line, node = found[0].start_mark.line + 1, found[1]
    return f"{path}, line {line}: "


def given(field):
    """Whether this command line sets --config.<field>."""
    return any(a == f"--config.{field}" or a.startswith(f"--config.{field}=") for a in sys.argv)


def _load_problem(config, err):
    """One line for a config file that does not load; our own loader's message already names the file."""
    from jaxsr.errors import JaxsrError

    if isinstance(ours := _innermost(err), JaxsrError):
        return _where(_user_path(config), getattr(ours, "field", None)) + str(ours)
    return f"cannot load the config {_user_path(config)}: {_root_cause(err)}"


def _user_path(value):
    """The config file as the user named it, not the loader (FROM_FILE) it goes through."""
    return value.split(":", 1)[1] if value.startswith(FROM_FILE + ":") else value


def _override_problem(override, err):
    err = _innermost(err)
    if isinstance(err, (KeyError, AttributeError)):
        return f"the config has no field {override.split('=')[0][len('--config.'):]}"
    return _root_cause(err).strip('"')


def _flag_error(argv, e):
    """One line for a command line that does not parse: a config file that does not load, or the bad overrides."""
    config = _flag_value(argv, "config")
    err = _try_flags([argv[0], "--config", config]) if config else None
    if err is not None:
        return _load_problem(config, err)
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    bad = [(a, err) for a in overrides if (err := _try_flags([argv[0], "--config", config, a])) is not None] if config else []
    if bad:
        return "; ".join(f"cannot apply {a}: {_override_problem(a, err)}" for a, err in bad) + \
            ". Run with --print_config to see the fields and their types"
    return f"{e}\nusage: python run_train.py --config configs/x4.py [--config.<field>=<value> ...] [--workdir DIR]"


def config_name():
    """The config file the user gave (a JSON/YAML one is read through jaxsr.train.config.get_config)."""
    return _user_path(flags.FLAGS["config"].config_filename)


def _config_path(value):
    """What config_flags loads for a --config value: a recipe by name (x4), a run's config.json/YAML through
    jaxsr.train.config.get_config, or the path as given."""
    from jaxsr.train.config import RECIPES

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


def _flag_value(argv, name):
    return next((argv[i + 1] if a == f"--{name}" and i + 1 < len(argv) else a.split("=", 1)[1]
                 for i, a in enumerate(argv) if a == f"--{name}" or a.startswith(f"--{name}=")), None)


def _workdir_config(argv):
    """argv with `--config <workdir>/config.json` where it names no config: a workdir reruns as its last start
    configured it (with this command line's overrides on top)."""
    if _flag_value(argv, "config") is not None:
        return argv
    workdir = _flag_value(argv, "workdir")
    if workdir is None:
        sys.exit("error: give --config (a recipe such as x4, or a .py, .yaml or .json config), or the --workdir of a run "
                 "to continue it as configured")
    saved = os.path.join(workdir, "config.json")
    if not os.path.isfile(saved):
        sys.exit(f"error: --workdir {workdir} holds no run (no config.json): give --config to start one there")
    return [argv[0], "--config", saved, *argv[1:]]


def parse_flags(argv):
    """absl's flag parsing, with a config that does not load or a bad override turned into one line."""
    argv = _from_file(_workdir_config(argv))
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # absl, ml_collections and the recipe itself raise many kinds
        print(f"error: {_flag_error(argv, e)}", file=sys.stderr)
        sys.exit(2)
