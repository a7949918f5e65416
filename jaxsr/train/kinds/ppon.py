"""The `ppon` training kind: PPON's progressive phases (victorca25/traiNNer's `ppon_model.py` and its guide,
docs/howtotrain.md "Single-Image Super-Resolution PPON models"), built on the `sr` kind's builders and step.

`ppon.ppon_stages: [s2, s3]`: the phase of train step k (0-based, the steps completed before it) is 1 + the number of
stages <= k, so phase 1 (content: CFEM + CRM, `p1_losses` on the content output) runs steps [0, s2), phase 2
(structure: SFEM + SRM, `p2_losses` on the structure output) [s2, s3), phase 3 (perceptual: PFEM + PRM, `p3_losses`
on the perceptual output, plus the adversarial term and the discriminator) from s3. As the guide says: [0, 0] is phase
3 from the start, [0, N] phase 2 then phase 3 after N iterations, [N, N] phase 1 for N iterations then phase 3.

The p*_losses name entries of `config.losses` (the guide matches its loss names as they are logged; the recipe keys its
entries `pix`, `pix-multiscale`, `ms-ssim`, `fea`, `gan` to match); the `gan` entries join phase 3 by themselves.
The other branches are frozen: gradients stop at their outputs (PPON's `branch_only`), and each branch has its own
optimizer state (its schedule offset to the step its phase starts at, as traiNNer steps its schedulers every
iteration), which only its phase updates: frozen parameters, their EMA and optimizer state stay bit-identical.
"""
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxsr import evaluate, optim, parallel
from jaxsr.archs.ppon import BRANCHES
from jaxsr.errors import ConfigError
from jaxsr.train import state as state_lib
from jaxsr.train.kind import Scores, refuse_unsupported
from jaxsr.train.kinds.sr import (SR, build_data, build_discriminator, build_generator, build_objective, build_optimizers,
                                  build_state, build_steps)
from jaxsr.train.logger import log

# The modules each phase trains, named as the reference's set_optim_params freezes them.
MODULES = {"content": ("CFEM", "CRM"), "structure": ("SFEM", "SRM"), "perceptual": ("PFEM", "PRM")}
ON_DISCRIMINATOR = ("gan", "feature_matching")  # loss names that need D, which only phase 3 has


def default_config():
    """The `ppon` section (the guide's option names): where phases 2 and 3 start, and the `config.losses` entries of
    each phase (traiNNer's defaults are [50000, 75000]; these loss names are the guide's example)."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.ppon_stages = (50_000, 75_000)
    c.p1_losses = ("pix",)
    c.p2_losses = ("pix-multiscale", "ms-ssim")
    c.p3_losses = ("fea",)
    return c


def phase_at(stages, step):
    """1, 2 or 3: the phase of train step `step` (0-based)."""
    return 1 + sum(step >= int(s) for s in stages)


def phase_losses(cfg, phase):
    """The `config.losses` keys of a phase; phase 3 takes the `gan` entries whether p3_losses names them or not."""
    names = [str(n) for n in cfg.ppon[f"p{phase}_losses"]]
    if phase == 3 and cfg.gan.enabled:
        names += [k for k, e in cfg.losses.items() if e["name"] == "gan" and k not in names]
    return names


def check_ppon(cfg):
    """What kind='ppon' refuses, each in one line naming the field."""
    if cfg.model.arch != "ppon":
        raise ConfigError(f"kind='ppon' trains a PPON generator: set model.arch='ppon' (or 'auto' with a PPON init_weights), "
                          f"not {cfg.model.arch!r}")
    stages = [int(s) for s in cfg.ppon.ppon_stages]
    if len(stages) != 2 or not 0 <= stages[0] <= stages[1]:
        raise ConfigError(f"ppon.ppon_stages must be [s2, s3] with 0 <= s2 <= s3 (where phases 2 and 3 start), got {stages}")
    used = set()
    for phase in (1, 2, 3):
        for name in phase_losses(cfg, phase):
            if name not in cfg.losses:
                raise ConfigError(f"ppon.p{phase}_losses names {name!r}, which config.losses lacks (it has "
                                  f"{', '.join(cfg.losses) or 'none'})")
            if phase < 3 and cfg.losses[name]["name"] in ON_DISCRIMINATOR:
                raise ConfigError(f"ppon.p{phase}_losses names {name!r}, a discriminator loss: the discriminator trains in "
                                  "phase 3 only (p3_losses)")
            used.add(name)
    unused = [k for k in cfg.losses if k not in used]
    if unused:
        raise ConfigError(f"losses.{unused[0]} is in none of ppon.p1_losses, p2_losses, p3_losses: name it in a phase or "
                          "remove it")
    refuse_unsupported(cfg, ": the discriminator joins at ppon_stages[1], "
                       "and each branch keeps its own optimizer state (no accumulation, plateau or schedule-free "
                       "optimizer, float16 loss scaling or per-layer statistics)",
                       ("gan.start_step", cfg.gan.start_step, cfg.gan.start_step != 0),
                       ("optim.accumulate", cfg.optim.accumulate, int(cfg.optim.accumulate) != 1),
                       ("optim.schedule", cfg.optim.schedule, cfg.optim.schedule == "plateau"),
                       ("optim.name", cfg.optim.name, optim.is_schedule_free(cfg.optim)))


def phase_config(cfg, phase):
    """The config a phase's objective and optimizers are built from: its losses only, D (joining at s3) in phase 3."""
    c = ml_collections.ConfigDict(cfg.to_dict(), type_safe=False)
    c.losses = ml_collections.ConfigDict({k: cfg.losses[k].to_dict() for k in phase_losses(cfg, phase)}, type_safe=False)
    c.gan.enabled = bool(cfg.gan.enabled) and phase == 3
    c.gan.start_step = int(cfg.ppon.ppon_stages[1]) if phase == 3 else 0
    return c


def _top(path):
    return str(getattr(path[0], "key", getattr(path[0], "name", "")))


def in_branch(params, branch):
    """params -> bool tree: the leaves of `branch`'s modules."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _top(path) in MODULES[branch], params)


def branch_optimizer(cfg, stages):
    """(optimizer over all of G's params: one state per branch, which the phase's `updating(active)` moves,
    {branch: schedule offset})."""
    offsets = {"content": 0, "structure": int(stages[0]), "perceptual": int(stages[1])}
    txs = {b: optax.masked(optim.build_optimizer(cfg.optim, cfg.train.total_steps, offset=offsets[b]),
                           lambda params, b=b: in_branch(params, b)) for b in BRANCHES}

    def init(params):
        return {b: txs[b].init(params) for b in BRANCHES}

    def updating(active):
        def update(grads, state, params=None):
            updates, inner = txs[active].update(grads, state[active], params)
            mask = in_branch(updates, active)
            return jax.tree.map(lambda m, u: u if m else jnp.zeros_like(u), mask, updates), {**state, active: inner}

        return optax.GradientTransformation(init, update)

    return updating, offsets


class PPON(SR):
    """PPON's three phases through the sr kind's step; see the module docstring and `jaxsr.train.kind.Kind`."""

    @staticmethod
    def check(cfg):
        check_ppon(cfg)
        SR.check(cfg)
        for phase in (1, 2, 3):
            build_objective(phase_config(cfg, phase))

    def __init__(self, cfg, workdir, mesh, meta=None):
        check_ppon(cfg)
        self.cfg = cfg
        self.stages = [int(s) for s in cfg.ppon.ppon_stages]
        resume_spec = meta.get("spec") if meta else None
        if resume_spec is not None and cfg.init_weights:
            log.info(f"resuming from the checkpoint at step {meta['step']}: init_weights ({cfg.init_weights}) is not "
                     "applied, the checkpoint holds the weights")
        objectives = {p: build_objective(phase_config(cfg, p)) for p in (1, 2, 3)}
        _, tx_d = build_optimizers(phase_config(cfg, 3))  # D's schedule offset to s3, where it joins
        updating, self.offsets = branch_optimizer(cfg, self.stages)
        self.perceptual = evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        model, self.spec = build_generator(cfg, resume_spec)
        disc = build_discriminator(cfg, self.spec)
        self.data = build_data(cfg, workdir)
        if not self.data.val and (cfg.val.every or cfg.val.at_start or cfg.init_weights):
            raise ConfigError("no validation image to measure: give data.val_dir images larger than "
                              f"{evaluate.SSIM_WINDOW + 2 * cfg.scale} px a side, or set val.every=0 and val.at_start=False")
        self.meta = {"spec": self.spec}

        eval_model = nnx.clone(model)
        eval_model.eval()
        self.eval_def = state_lib.split(eval_model)[0]
        d_def = state_lib.split(disc)[0] if disc is not None else None
        state = build_state(cfg, model, updating("content"), disc, tx_d, paired=self.data.splits.get("train_lr") is not None)
        self.masks = {b: in_branch(state.params, b) for b in BRANCHES}
        self.state = parallel.replicate(mesh, state)
        # the losses' own weights ({term key: weights}), every phase's: each step takes the ones of its terms
        self.feature_params = parallel.replicate(mesh, {k: v for o in objectives.values() for k, v in o.feature_params.items()})
        model.train()
        model.branch_only = True  # gradients reach only the phase's own modules
        self.phases = {}
        for phase, branch in enumerate(BRANCHES, 1):
            model.branch = eval_model.branch = branch
            g_def, p_eval_def = state_lib.split(model)[0], state_lib.split(eval_model)[0]
            with_d = phase == 3 and d_def is not None
            steps = build_steps(phase_config(cfg, phase), mesh, objectives[phase], updating(branch), g_def, p_eval_def,
                                d_def if with_d else None, tx_d if with_d else None)
            self.phases[phase] = (steps, self._jit(mesh, steps.gan if with_d else steps.g, branch, objectives))
        self.steps = self.phases[1][0]
        self._phase = None
        self._feed_plateau = None  # plateau schedules are refused
        self._bicubic_psnr = {}

    def _jit(self, mesh, inner, branch, objectives):
        """The phase's step: the sr step on the branch's output, then the frozen branches' params and EMA put back bit
        for bit, every phase's loss logged (0 outside its phase) and the lr of the branch's own schedule."""
        keys = sorted({t.key for o in objectives.values() for t in o.terms})
        cfg, mask, offset = self.cfg, self.masks[branch], self.offsets[branch]

        def keep(new, old):
            return None if new is None else jax.tree.map(lambda m, n, o: n if m else o, mask, new, old)

        def step(state, batch, feature_params):
            new, metrics = inner(state, batch, feature_params)
            new = new.replace(params=keep(new.params, state.params), ema=keep(new.ema, state.ema))
            lr = optim.current_lr(cfg.optim, cfg.train.total_steps, state.opt_state[branch], offset)
            return new, {**{k: jnp.zeros(()) for k in keys}, **metrics, "lr": lr,
                         "phase": jnp.float32(BRANCHES.index(branch) + 1)}

        return jax.jit(step, donate_argnums=(0,), out_shardings=(parallel.replicated(mesh),) * 2)

    def phase(self, step):
        return phase_at(self.stages, step)

    def summary(self, state):
        s2, s3 = self.stages
        return (f"ppon x{self.cfg.scale}, {sum(x.size for x in jax.tree.leaves(state.params)):,} parameters; phases: "
                f"content [0, {s2}), structure [{s2}, {s3}), perceptual from {s3}")

    def train_step(self, state, batch, step):
        phase = self.phase(step)
        if phase != self._phase:
            branch = BRANCHES[phase - 1]
            frozen = [m for b in BRANCHES if b != branch for m in MODULES[b]]
            log.info(f"step {step}: phase {phase} ({branch}): training {' + '.join(MODULES[branch])} on "
                     f"{', '.join(phase_losses(self.cfg, phase)) or 'no loss'}; {', '.join(frozen)} frozen")
            self._phase = phase
        self.steps = self.phases[phase][0]  # the phase's preview for log_images
        return self.phases[phase][1](state, batch, self.feature_params)

    def inspect_step(self, state, batch, step):
        raise ConfigError("kind='ppon' logs no per-layer statistics: set log.gradients=0 and log.parameters=0")

    def deployable(self, state):
        """The eval model, its `branch` the current phase's (what validation scores first and ONNX exports)."""
        model = super().deployable(state)
        model.branch = BRANCHES[self.phase(int(jax.device_get(state.step))) - 1]
        return model

    def validate(self, model, split="val"):
        """The sr kind's scores of the current phase's branch (val.best_metric among them), and PSNR/SSIM of all three
        as psnr_content, ssim_content, ... ."""
        current, scores = model.branch, {}
        for branch in BRANCHES:
            model.branch = branch
            scores[branch] = super().validate(model, split)
        model.branch = current
        values = dict(scores[current].values)
        for branch in BRANCHES:
            values.update({f"{k}_{branch}": scores[branch].values[k] for k in ("psnr", "ssim")})
        each = ", ".join(f"{b} {scores[b].values['psnr']:.3f}" for b in BRANCHES)
        return Scores(values, f"{current}: {scores[current].line}; PSNR by branch: {each} dB", scores[current].images)


__all__ = ["MODULES", "PPON", "check_ppon", "default_config", "phase_at", "phase_config", "phase_losses"]
