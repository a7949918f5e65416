"""What a training kind is. The loop (`jaxsr.train.loop`) owns time: steps, run control, checkpoints, the NaN guard,
logging, validation cadence, best-k and export names. A kind owns a way to train: its models and state, its jitted
step(s), what validation scores, which images it logs and what it exports. `config.kind` picks one from
`jaxsr.train.kinds.KINDS`; docs/architecture.md has the checklist for adding one.
"""
from typing import Any, NamedTuple, Protocol

from jaxsr.errors import ConfigError


class Scores(NamedTuple):
    values: dict  # metric name -> mean over the validation set (val.best_metric among them)
    line: str  # what the console shows after "validation at step N: "
    images: list  # (input, output, target) rows for TensorBoard


class Kind(Protocol):
    """Built as `Kind(cfg, workdir, mesh, meta)`, where `meta` is the run metadata of the checkpoint the run resumes
    from (None on a fresh start). Building may read files; it moves none."""

    state: Any  # the initial state, replicated on the mesh: a pytree with `step` and `nonfinite` (consecutive skipped steps)
    data: Any  # `.train`: the resumable iterator of this host's batches (next, get_state, set_state, close); `.val`
    meta: dict  # JSON-able facts a checkpoint keeps so that a resume rebuilds the same models (e.g. a spec)
    carryable: tuple  # top-level state fields a changed config may reshape on resume (e.g. optimizer states, the EMA)

    @staticmethod
    def resolve_config(cfg, workdir):
        """`cfg` with what the kind infers filled in, before it is printed or frozen (workdir None: no resume)."""

    @staticmethod
    def check(cfg):
        """Raise ConfigError for what building the kind would refuse. --print_config calls it (a run meets the same
        errors when it builds the kind); it may start a JAX backend, so a run does not call it before choosing one."""

    def summary(self, state) -> str:
        """The models in a few words, for the run's first console line."""

    def train_step(self, state, batch, step: int):
        """(state, metrics) after one step; `step` counts the steps completed before it."""

    def inspect_step(self, state, batch, step: int):
        """Optional (log.gradients / log.parameters): train_step that also returns {tag: value} per layer, tags such as
        grad_norm/G/<module path>, param_norm/..., update_ratio/... (scalars) and grad_hist/..., param_hist/... (arrays).
        The loop calls it only on the steps that log them; a kind without it logs none."""

    def resumed(self, state, carry, saved_config):
        """The restored state made right for this config: `carry` (a `jaxsr.train.checkpoint.Carry`, or None when the
        checkpoint's tree is this config's) lists the leaves that started afresh; `saved_config` is the config the
        checkpoint was saved under (a dict; None if unknown)."""

    def deployable(self, state):
        """What validation scores and exports write: host-side eval models."""

    def validate(self, deployable, split="val") -> Scores:
        """Scores on the validation images, or on `split` ('test' for val.test_every, a name of val.extra), which the
        loop logs apart and never uses for best-k."""

    def after_validation(self, state, value):
        """The state once told the validation metric (e.g. a plateau schedule)."""

    def export(self, deployable, base: str):
        """Write `base` + extensions (.pth, .safetensors, ...); raise WeightsError for an export that cannot be made."""

    def mirror(self, deployable, base: str, info: dict) -> str:
        """Write the checkpoint's deploy mirror, one weights file (`base` + its extension) that `init_weights` and
        `jaxsr.weights.load_model` take, with `info` (step, metrics) in its metadata; return its path."""

    def log_images(self, state, batch, step: int, board):
        """Training images (every train.image_every steps)."""


def refuse_unsupported(cfg, why, *checks):
    """A kind's check of what it does not support: one ConfigError naming the first field set among `checks`
    ((field, value, bad) triples) and the ones only the sr kind supports (float16 loss scaling, per-layer statistics);
    `why` ends the message."""
    common = (("compute_dtype", cfg.compute_dtype, cfg.compute_dtype == "float16"),
              ("log.gradients", cfg.log.gradients, bool(cfg.log.gradients)),
              ("log.parameters", cfg.log.parameters, bool(cfg.log.parameters)))
    for field, value, bad in (*checks, *common):
        if bad:
            raise ConfigError(f"kind={cfg.kind!r} does not support {field}={value!r}{why}", field)
