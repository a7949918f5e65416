"""The run config: the defaults every recipe in configs/ starts from, and `resolve`, where a run's config is read.

A recipe is `get_config()` returning `base_config()` with its own values (big_vision style). Each section's
defaults come from its owner (`jaxsr.data`, `jaxsr.degrade`, `jaxsr.losses`, `jaxsr.losses.gan`, `jaxsr.optim`,
and this module for `train` and `val`), so each knob is defined once. Sections accept numbers written as
strings ("2e-4", as YAML-minded users write them); `resolve` casts them to the default's type once.
"""
import difflib
import json
import os

import ml_collections
from ml_collections import config_dict

from jaxsr import archs, data, degrade, losses, optim, parallel
from jaxsr.degrade import augment
from jaxsr.errors import ConfigError, WeightsError
from jaxsr.losses import gan
from jaxsr.train.kinds import ppon as ppon_kind
from jaxsr.train.kinds import sftgan as sftgan_kind
from jaxsr.train.kinds import pix2pix as pix2pix_kind
from jaxsr.train.kinds import cyclegan as cyclegan_kind
from jaxsr.train.kinds import wbc as wbc_kind
from jaxsr.train.kinds import srflow as srflow_kind

# Changing any of these makes a saved state unusable or the run a different experiment: refused on resume.
INCOMPATIBLE_ON_RESUME = ("kind", "seed", "scale", "model", "compute_dtype", "gan.enabled", "gan.discriminator", "optim.name",
                          "optim.accumulate", "val.best_metric", "optim_d.name", "train.batch_size", "data.gt_size", "data.hr_dir", "data.lr_dir",
                          "data.train_dir", "data.train_lr_dir", "data.split", "data.packed", "data.sources", "degrade.mode", "degrade.gt_size",
                          "degrade.queue_size")
INCOMPATIBLE_ON_RESUME += ("ppon.ppon_stages",)  # where the phases of a PPON run start: passed phases cannot move
INCOMPATIBLE_ON_RESUME += ("sftgan.seg_dir", "sftgan.bg_dir", "sftgan.bg_ratio")  # the training stream of an SFTGAN run
INCOMPATIBLE_ON_RESUME += ("pix2pix.direction", "pix2pix.preprocess", "pix2pix.load_size", "pix2pix.crop_size",
                           "pix2pix.center_crop_size")  # the training stream of a pix2pix run
INCOMPATIBLE_ON_RESUME += ("cyclegan.direction", "cyclegan.serial", "cyclegan.preprocess", "cyclegan.load_size",
                           "cyclegan.crop_size", "cyclegan.center_crop_size", "cyclegan.pool_size")  # a CycleGAN run's stream and pool
INCOMPATIBLE_ON_RESUME += ("wbc.preprocess", "wbc.load_size", "wbc.crop_size", "wbc.center_crop_size",
                           "wbc.ndf", "wbc.netD")  # a WBC run's stream and discriminators
INCOMPATIBLE_ON_RESUME += ("srflow.train_rrdb_delay",)  # where an SRFlow run unfreezes its encoder


def train_config():
    """The `train` section: how long, how big, and how often to log and checkpoint."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.total_steps = 100_000
    c.batch_size = 16  # global batch, over all devices and hosts
    c.log_every = 100
    c.image_every = 0  # training LR|SR|HR grids to TensorBoard every N steps (0: off; validation shows its own)
    c.ckpt_every = 5_000
    c.keep_best = 3  # checkpoints kept by the validation metric (val.best_metric), besides the latest two
    c.snapshot_every = 0  # also keep the checkpoint at every multiple of N, with a weights-only export (0: none)
    c.stop_at = 0  # end this invocation at this step; the lr schedule still runs to total_steps (0: at total_steps)
    c.max_nonfinite = 10  # stop after this many NaN/Inf steps in a row (each one is skipped)
    return c


def val_config():
    """The `val` section: how often to measure on the validation images (and export), and what picks the best."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.every = 5_000
    c.at_start = False  # validate before the first step (always done for a warm start)
    # perceptual metrics, from weight files the user supplies (nothing is downloaded; docs/inference.md says where):
    c.lpips = ()  # (torchvision vgg16/alexnet .pth, the lpips package's v0.1 vgg.pth/alex.pth)
    c.dists = ()  # (torchvision vgg16 .pth, DISTS_pytorch's weights.pt)
    c.topiq = ""  # pyiqa's TOPIQ-FR weights, cfanet_fr_kadid_res50-2c4cc61d.pth (one file)
    # what best-k checkpoints, the _best exports and a plateau schedule follow: psnr/ssim/topiq (highest), lpips/dists (lowest)
    c.best_metric = "psnr"
    c.test_every = 0  # also score the test split every N steps (0: never), logged as test_* and never used for best-k
    # named extra validation sets scored at each validation, each logged under its name (<name>_psnr, ...), never used for
    # best-k: {name: hr_folder} or {name: dict(hr=hr_folder, lr=lr_folder)} (without lr: MATLAB-bicubic LR, as val_dir)
    c.extra = ml_collections.ConfigDict(type_safe=False)
    return c


def export_config():
    """The `export` section: what models/ gets besides the .pth and .safetensors (EMA weights)."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.onnx = False  # also models/<name>_x<scale>.onnx, checked in onnxruntime (jaxsr.deploy; needs onnx and onnxruntime)
    c.onnx_fp16 = False  # the ONNX file in float16
    return c


def log_config():
    """The `log` section: where the logs go besides the console, train.log, metrics.jsonl and TensorBoard."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.tensorboard = True  # False: no <workdir>/tensorboard (metrics.jsonl and train.log are always written)
    c.wandb = False  # mirror the TensorBoard logs to Weights & Biases (needs `pip install wandb`; WANDB_MODE=offline works offline)
    c.wandb_project = "jaxsr"
    # per layer (module path), from inside the jitted step on these steps only (a second compiled variant of the step):
    c.gradients = 0  # every N steps: each layer's gradient norm and update/weight ratio, G's and D's (0: off)
    c.parameters = 0  # every N steps: each layer's parameter norm (0: off)
    c.histograms = False  # with them, a histogram of each layer's gradients / parameters (large models: many)
    return c


def base_config():
    c = ml_collections.ConfigDict(type_safe=False)
    c.kind = "sr"  # the training kind (jaxsr.train.kinds.KINDS): sr = a generator, with a discriminator in the GAN stage
    c.name = "model"  # export file names: models/<name>_x<scale>.pth
    c.seed = 0
    c.scale = 4
    # Generator: the spec given to jaxsr.archs.build (scale is added). arch='auto' takes the
    # architecture and hyperparameters from init_weights.
    c.model = ml_collections.ConfigDict(dict(arch="esrgan", **archs.get("esrgan").defaults), type_safe=False)
    c.compute_dtype = "auto"  # 'auto': bfloat16 on GPU/TPU, float32 on CPU; params, losses and metrics stay float32
    c.init_weights = config_dict.placeholder(str)  # .pth/.safetensors/jaxsr export to warm-start G from
    c.init_strict = True
    # XLA:CPU's kernels (jaxsr.parallel.CPU_KERNEL_SETTINGS: ynnpack, dots, own, onednn): 'auto' times the families whose
    # fastest setting depends on the CPU on this host once (cached) and keeps the choice with the run; GPU/TPU ignore it
    c.cpu_kernels = "auto"

    c.data = data.default_config()
    c.degrade = degrade.default_config()
    c.losses = losses.default_config()
    c.gan = gan.default_config()
    c.optim = optim.default_config()
    c.optim_d = optim.default_config(lr=1e-4, ema_decay=None)
    c.train = train_config()
    c.val = val_config()
    c.export = export_config()
    c.log = log_config()
    c.ppon = ppon_kind.default_config()  # kind='ppon': its phases (jaxsr.train.kinds.ppon)
    c.sftgan = sftgan_kind.default_config()  # kind='sftgan': maps, background images, G's two lrs (jaxsr.train.kinds.sftgan)
    c.pix2pix = pix2pix_kind.default_config()  # kind='pix2pix': aligned data, direction, objective (jaxsr.train.kinds.pix2pix)
    c.cyclegan = cyclegan_kind.default_config()  # kind='cyclegan': unaligned data, cycle/identity weights, pool, warm starts
    c.wbc = wbc_kind.default_config()  # kind='wbc': White-box Cartoonization's representations, losses, phases
    c.srflow = srflow_kind.default_config()  # kind='srflow': NLL, encoder delay, dequantization, heats (jaxsr.train.kinds.srflow)
    return c


# Sections whose fields are not fixed: the architecture's hyperparameters, named loss entries, the discriminator's spec.
FREE_FORM = ("model", "losses", "gan.discriminator", "val.extra")


def get_config(path, _within=()):
    """A run's config from a JSON (or YAML) file: an overlay of any subset of fields on `base` (a recipe by name, such as
    x4, or a path to a .py/.json/.yaml config, relative to this file; default: the base config), or a workdir's
    config.json, which holds every field: `run_train.py --config runs/x/config.json --workdir runs/y` reruns that run
    exactly (run_train hands such files to this function). A config.json's `history` (what changed at each start) is
    not part of the config."""
    values = _read(path)
    values.pop("history", None)
    c = _base(values.pop("base", None), path, _within + (os.path.abspath(path),))
    _overlay(c, values)
    return c


def _read(path):
    import yaml

    try:
        with open(path) as f:
            values = yaml.safe_load(f) if path.endswith((".yaml", ".yml")) else json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the config {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}, line {e.lineno}, column {e.colno}: {e.msg} (not valid JSON)") from None
    except yaml.MarkedYAMLError as e:
        where = f", line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}" if e.problem_mark else ""
        context = f" ({e.context})" if e.context else ""
        raise ConfigError(f"{path}{where}: {e.problem}{context} (not valid YAML)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not a readable JSON or YAML file: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} holds no config (a mapping of sections such as model, data, optim)")
    return values


RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


def recipe_names():
    return sorted(f[:-3] for f in os.listdir(RECIPES) if f.endswith(".py") and not f.startswith("_"))


def _base(base, path, within):
    """The config an overlay file starts from: its `base` recipe (by name) or config file (by path)."""
    if base is None:
        return base_config()
    if not isinstance(base, str) or not base:
        raise ConfigError(f"base must be a recipe name or a config file path, got {base!r}", "base")
    recipe = os.path.join(RECIPES, base + ".py")
    here = os.path.join(os.path.dirname(os.path.abspath(path)), base)
    found = next((p for p in (here, recipe if os.sep not in base else None) if p and os.path.isfile(p)), None)
    if found is None:
        close = difflib.get_close_matches(base, recipe_names(), n=1)
        raise ConfigError(f"base: no recipe named {base!r} and no file {here}" + (f" (did you mean {close[0]}?)" if close else "") +
                          f"; recipes: {', '.join(recipe_names())}, or give a path to a .py, .json or .yaml config", "base")
    if os.path.abspath(found) in within:
        raise ConfigError(f"base: {base} is already being read (the bases form a loop)", "base")
    if found.endswith((".json", ".yaml", ".yml")):
        return get_config(found, within)
    if not found.endswith(".py"):
        raise ConfigError(f"base: {found} is not a .py, .json or .yaml config", "base")
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"jaxsr_base_{len(within)}", found)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        c = module.get_config()
    except Exception as e:
        raise ConfigError(f"base: the recipe {found} does not load: {type(e).__name__}: {e}", "base") from None
    return ml_collections.ConfigDict(c.to_dict(), type_safe=False)


def _overlay(node, values, prefix=""):
    """`values` laid over the defaults in `node`: a section given in part keeps its other defaults; a free-form one
    (FREE_FORM) is replaced whole, except a model section of the default architecture, which keeps its other
    hyperparameters (another architecture's `build` fills in its own). Unknown fields stay, for `resolve` to name."""
    for key, value in values.items():
        field = prefix + key
        if field == "model" and isinstance(value, dict) and value.get("arch", node.model.arch) == node.model.arch:
            node.model = ml_collections.ConfigDict({**node.model.to_dict(), **value}, type_safe=False)
        elif isinstance(value, dict) and field not in FREE_FORM and isinstance(node.get(key), ml_collections.ConfigDict):
            _overlay(node[key], value, field + ".")
        else:
            node[key] = ml_collections.ConfigDict(value, type_safe=False) if isinstance(value, dict) else value


def flatten(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, (dict, ml_collections.ConfigDict)):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _cast(field, value, default):
    """`value` as the type of `default`: a number given as a string (also inside lists) cast, another type refused."""
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{field} must be true or false, got {value!r}", field)
        return value
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{field} must be a list, got {value!r}", field)
        num = next((d for d in default if isinstance(d, (int, float)) and not isinstance(d, bool)), None)
        return type(value)(_cast(field, v, num) for v in value) if num is not None else value
    if isinstance(default, str):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{field} must be a string, got {value!r}", field)
        return value
    if not isinstance(default, (int, float)):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{field} must be a number, got {value!r}", field)
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{field} must be a number, got {value!r}", field) from None
    if isinstance(default, int):
        if not number.is_integer():
            raise ConfigError(f"{field} must be a whole number, got {value!r}", field)
        return int(number)
    return number


def resolve(cfg):
    """The config a run uses: numbers given as strings cast to the type of their default, checked for what would
    otherwise fail later. Returns a new (unlocked) ConfigDict; raises ConfigError naming the field."""
    out = ml_collections.ConfigDict(cfg.to_dict(), type_safe=False)
    defaults = flatten(base_config())
    _check_fields(out, defaults)
    for field, value in flatten(out).items():
        if field in defaults:
            free = any(field.startswith(f + ".") for f in FREE_FORM)  # another architecture's field may share a name
            new = _cast(field, value, defaults[field]) if not free or isinstance(value, str) else value
            if new is not value:
                *parents, leaf = field.split(".")
                node = out
                for p in parents:
                    node = node[p]
                node[leaf] = new
    for section in ("optim", "optim_d"):  # shown by --print_config and frozen in config.json as the run uses them
        out[section].betas = optim.betas_for(out[section])
    _check(out)
    return out


def _check_fields(cfg, defaults):
    """Refuse a field no section has (a misspelt `c.train.total_step = 4` would otherwise train to the default)."""
    model = cfg.get("model", {}).get("arch", "auto")
    known_model = None
    if model != "auto":
        try:
            known_model = {"arch", "scale", *archs.get(model).defaults}
        except WeightsError:
            known_model = None  # _check names the architecture
    for field in flatten(cfg):
        section = next((f for f in FREE_FORM if field.startswith(f + ".")), None)
        if section == "model" and known_model is not None and field[len("model."):] not in known_model:
            close = difflib.get_close_matches(field[len("model."):], sorted(known_model), n=1)
            raise ConfigError(f"{field}: {model} has no such hyperparameter" + (f" (did you mean model.{close[0]}?)" if close
                              else f"; it has {', '.join(sorted(known_model - {'arch'}))}"), field)
        if section is None and field not in defaults and field not in FREE_FORM:
            close = difflib.get_close_matches(field, defaults, n=1)
            raise ConfigError(f"unknown config field {field}" + (f" (did you mean {close[0]}?)" if close else "") +
                              "; run with --print_config to see every field", field)


def _check(cfg):
    """What would otherwise fail later, or inside a jitted step with a shape error, or train nonsense."""
    for field in ("scale", "train.batch_size", "train.total_steps", "train.log_every", "train.ckpt_every", "train.keep_best",
                  "train.max_nonfinite", "optim.lr", "optim_d.lr"):
        value = cfg
        for k in field.split("."):
            value = value[k]
        if not value > 0:
            raise ConfigError(f"{field} must be positive, got {value!r}", field)
    for field in ("data.num_workers", "val.every", "val.test_every", "log.gradients", "log.parameters", "train.image_every", "train.snapshot_every", "train.stop_at", "optim.warmup_steps",
                  "optim.weight_decay", "optim.clip_grad_norm"):
        section, key = field.split(".")
        if cfg[section][key] < 0:
            raise ConfigError(f"{field} must be >= 0, got {cfg[section][key]!r}", field)
    kernels = ("auto", *parallel.CPU_KERNEL_SETTINGS)
    if cfg.cpu_kernels not in kernels:
        raise ConfigError(f"cpu_kernels must be one of {', '.join(kernels)}, got {cfg.cpu_kernels!r}", "cpu_kernels")
    s = cfg.scale
    if cfg.model.arch != "auto":
        try:
            record = archs.get(cfg.model.arch)
        except WeightsError:
            record = None
        if record is None or record.kind != "generator":
            raise ConfigError(f"model.arch must be 'auto' or one of {', '.join(archs.names())}, got {cfg.model.arch!r}", "model.arch")
        if s not in record.scales:
            raise ConfigError(f"scale={s}: {record.what} supports scale {', '.join(map(str, record.scales))}; set --config.scale "
                              "to one of them, or choose another model.arch", "scale")
    for field in ("data.gt_size", "degrade.gt_size"):
        section, key = field.split(".")
        size = cfg[section][key]
        if size and size % s:
            raise ConfigError(f"{field}={size} is not a multiple of scale={s}; use {max(s, size // s * s)}", field)
    if cfg.degrade.mode not in degrade.MODES:
        raise ConfigError(f"degrade.mode must be one of {', '.join(degrade.MODES)}, got {cfg.degrade.mode!r}", "degrade.mode")
    data.check_options(cfg.data)
    sources = cfg.data.get("sources") or ()
    if (cfg.data.get("packed") or sources) and (cfg.data.hr_dir or cfg.data.train_dir):
        raise ConfigError("data.packed/data.sources are the training set: unset data.hr_dir/data.train_dir (validation "
                          "images go in data.val_dir)")
    paired_prob = cfg.degrade.get("paired_prob", 1.0)
    if not 0 <= paired_prob <= 1:
        raise ConfigError(f"degrade.paired_prob must be a probability in [0, 1], got {paired_prob!r}", "degrade.paired_prob")
    paired = cfg.data.lr_dir or cfg.data.train_lr_dir or any(hasattr(e, "get") and e.get("lr") for e in sources)
    if (not paired or paired_prob < 1) and cfg.degrade.gt_size and cfg.degrade.gt_size > cfg.data.gt_size:
        raise ConfigError(f"degrade.gt_size ({cfg.degrade.gt_size}) is larger than data.gt_size ({cfg.data.gt_size}), the "
                          "host crop it is cut from; set data.gt_size >= degrade.gt_size")
    if cfg.degrade.get("augment") is not None:
        bad = augment.check(cfg.degrade.augment)
        if bad:
            raise ConfigError(bad)
        if augment.enabled(cfg.degrade.augment) and cfg.train.batch_size < 2:
            raise ConfigError("degrade.augment mixes each sample with another of its batch: it needs train.batch_size >= 2")
    if cfg.degrade.mode == "realesrgan" and cfg.degrade.queue_size:
        degrade.check_queue(cfg.degrade, cfg.train.batch_size)
    _check_objective(cfg)
    _check_extra(cfg.val.extra)
    if cfg.log.wandb:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("log.wandb=True needs the wandb package: pip install wandb (WANDB_MODE=offline runs "
                              "without a network), or set log.wandb=False")
    if cfg.export.onnx:
        import importlib.util

        missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"export.onnx=True needs {' and '.join(missing)}: pip install {' '.join(missing)}")


RESERVED_SET_NAMES = ("train", "val", "test", "layers", "system")  # their keys are taken in metrics.jsonl and TensorBoard


def _check_extra(extra):
    """val.extra: {name: hr_folder or dict(hr=..., lr=...)}, names that make plain log keys."""
    how = "e.g. {'div2k': '/data/DIV2K_valid_HR'} or {'div2k': {'hr': HR_DIR, 'lr': LR_DIR}}"
    if not isinstance(extra, (dict, ml_collections.ConfigDict)):
        raise ConfigError(f"val.extra must map names to validation folders, {how}; got {extra!r}", "val.extra")
    for name, folders in extra.items():
        if not name.isidentifier() or name in RESERVED_SET_NAMES:
            raise ConfigError(f"val.extra: {name!r} cannot name a validation set (its scores are logged as {name}_psnr): use "
                              f"letters, digits and _, not {', '.join(RESERVED_SET_NAMES)}", "val.extra")
        keys = set(folders) if isinstance(folders, (dict, ml_collections.ConfigDict)) else None
        if not (isinstance(folders, str) and folders) and not (keys and keys <= {"hr", "lr"} and folders.get("hr")):
            raise ConfigError(f"val.extra.{name} must be an HR folder or dict(hr=..., lr=...), {how}; got {folders!r}",
                              "val.extra")


def _check_objective(cfg):
    """The validation metric, the plateau schedule that follows it, and float16."""
    from jaxsr.evaluate import LOWER_IS_BETTER, METRICS

    metric = cfg.val.best_metric
    if metric not in METRICS:
        raise ConfigError(f"val.best_metric must be one of {', '.join(METRICS)}, got {metric!r}", "val.best_metric")
    for name in ("lpips", "dists"):
        files = cfg.val[name]
        if files and (isinstance(files, str) or len(files) != 2):
            raise ConfigError(f"val.{name} takes two weight files (see docs/inference.md), got {files!r}", f"val.{name}")
    if metric not in ("psnr", "ssim") and not cfg.val[metric]:
        raise ConfigError(f"val.best_metric={metric!r} needs its weight files in val.{metric} "
                          f"({'one path' if metric == 'topiq' else 'two paths'}; docs/inference.md says where to get them)")
    for section in ("optim", "optim_d"):
        o = cfg[section]
        if o.schedule != "plateau":
            continue
        if not cfg.val.every:
            raise ConfigError(f"{section}.schedule='plateau' follows the validation metric: set val.every > 0")
        if o.plateau_mode == "auto":  # the direction of the metric it follows
            o.plateau_mode = "min" if metric in LOWER_IS_BETTER else "max"
    if cfg.compute_dtype == "float16" and cfg.optim.accumulate > 1:
        raise ConfigError("compute_dtype='float16' scales G's loss per update: use optim.accumulate=1 with it")


def _full_model(values):
    """A config dict whose model section has its architecture's defaults filled in, so that a spec that leaves a field
    at its default compares equal to one that writes it out."""
    model = values.get("model") or {}
    try:
        record = archs.get(model.get("arch"))
    except WeightsError:
        return values
    return {**values, "model": record.full_spec(model)}


def resume_conflicts(saved: dict, cfg) -> tuple:
    """(fields that differ from the frozen config.json and must not change on resume, the other changed fields)."""
    now = flatten(_full_model(json.loads(cfg.to_json_best_effort())))
    before = flatten(_full_model(saved))
    defaults = flatten(base_config())  # a field newer than the saved config, at its default, is no change
    before.update({k: defaults[k] for k in now if k not in before and k in defaults})
    diffs = [k for k in sorted(set(now) | set(before)) if now.get(k) != before.get(k)]
    bad = [k for k in diffs if any(k == f or k.startswith(f + ".") for f in INCOMPATIBLE_ON_RESUME)]
    return bad, [k for k in diffs if k not in bad]
