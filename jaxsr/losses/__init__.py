"""The training objective: a registry of losses combined with config weights and active step ranges.

Config schema (`config.losses`, default `default_config()`): a list (or a ConfigDict of named entries) of dicts
    {name: str, weight: float = 1.0, start: int = 0, end: int | None = None,
     target: 'gt' | 'gt_usm' = 'gt', key: str = name, **options}
- `name` picks the loss (see `LOSSES`); `options` are that loss's keyword arguments.
- the term counts while `start <= step < end` (PPON-style phases); outside that range it costs nothing
  (`lax.cond`) and logs 0.
- `target` compares against the plain or the USM-sharpened ground truth (Real-ESRGAN sharpens the GT
  for its pixel and perceptual losses).
- `weight`/`start`/`end` may be strings ("2e-2"); `key` names the logged value (defaults to `name`; give
  one when a loss appears twice).

Losses and their options:
    l1, mse, charbonnier(eps=1e-12)              pixel
    ssim(y_channel=True), ms_ssim(y_channel=True, include_luminance=False)   traiNNer-redux definitions
    consistency(criterion='chc', blur=True, cosim=True, saturation=1, brightness=1)   neosr Oklab + L*
    hsluv(hue_weight, saturation_weight, lightness_weight, criterion='l1', blur_strength=0)
    color(criterion='l1', scale=4), luma(criterion='l1')
    detail(criterion='l1')                       finite-difference (edge) differences
    fft(criterion='l1')                          FFT magnitudes
    focal_frequency(alpha=1, patch_factor=1, ave_spectrum=False, log_matrix=False, batch_matrix=False)   Jiang et al. 2021
    multiscale(criterion='l1', scales=5, weights=None)   PPON's multiscale pixel loss (victorca25)
    ldl(criterion='l1', ksize=7)                 LDL artifact map (Liang et al. 2022); needs sr_ema
    perceptual(vgg_weights=PATH, layer_weights={...}, criterion='l1', use_input_norm=True, range_norm=False)
    contextual(vgg_weights=PATH, layer_weights={'conv3_2': 1, 'conv4_2': 1}, distance='cosine'|'l2', band_width=0.5,
               b=1, calc_type='regular'|'symmetric', use_input_norm=True, max_1d_size=100)   Mechrez et al. 2018
    gan(gan_type='vanilla'|'lsgan'|'hinge', relativistic=False, r1_weight=0, r1_every=16)
    feature_matching(criterion='l1')             D's features on SR vs HR; needs fake_features/real_features

Each loss declares the inputs it takes (`fn.inputs`, by name; `("sr", "target")` when it declares none):
    sr          the generator's output
    target      the term's `target`: `gt` or `gt_usm`
    params      the loss's own weights (VGG19 of perceptual/contextual), passed into a jitted step as an argument
    sr_ema      the EMA generator's output on the same LQ, without gradient (`ldl`)
    fake_logits, real_logits, fake_features, real_features: the discriminator on SR and on HR (`gan`,
                `feature_matching`; real ones without gradient)
`loss_set.inputs` is the union, so a training kind computes only what its objective needs. A loss that needs a new
input declares it here and the kind that trains with it supplies it; nothing else changes.

Everything is computed in float32 whatever dtype the network produced.
"""
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import ml_collections

from jaxsr.losses import color, frequency, gan, pixel, ssim
from jaxsr.losses.contextual import ContextualLoss
from jaxsr.losses.gan import GANObjective
from jaxsr.losses.ldl import LDLLoss
from jaxsr.losses.perceptual import PerceptualLoss

LOSSES = {
    "l1": lambda: pixel.l1,
    "mse": lambda: pixel.mse,
    "charbonnier": lambda eps=1e-12: lambda a, b: pixel.charbonnier(a, b, float(eps)),
    "ssim": lambda y_channel=True: lambda a, b: ssim.ssim_loss(a, b, y_channel),
    "ms_ssim": lambda y_channel=True, include_luminance=False: lambda a, b: ssim.ms_ssim_loss(a, b, y_channel, include_luminance),
    "consistency": lambda **o: lambda a, b: color.consistency_loss(a, b, **o),
    "hsluv": lambda **o: lambda a, b: color.hsluv_loss(a, b, **o),
    "color": lambda criterion="l1", scale=4: lambda a, b: color.color_loss(a, b, criterion, int(scale)),
    "luma": lambda criterion="l1": lambda a, b: color.luma_loss(a, b, criterion),
    "detail": lambda criterion="l1": lambda a, b: pixel.detail_loss(a, b, criterion),
    "fft": lambda criterion="l1": lambda a, b: frequency.fft_loss(a, b, criterion),
    "focal_frequency": lambda **o: lambda a, b: frequency.focal_frequency_loss(a, b, **o),
    "multiscale": lambda criterion="l1", scales=5, weights=None: lambda a, b: pixel.multiscale_loss(a, b, criterion, scales, weights),
    "ldl": LDLLoss,
    "perceptual": PerceptualLoss,
    "contextual": ContextualLoss,
}
_TERM_FIELDS = ("name", "weight", "start", "end", "target", "key")
DEFAULT_INPUTS = ("sr", "target")
ON_DISCRIMINATOR = ("fake_logits", "real_logits", "fake_features", "real_features")  # what only a GAN stage has


def default_config():
    """L1 against the USM-sharpened GT: Real-ESRGAN's pixel loss (`l1_gt_usm`)."""
    return ml_collections.ConfigDict({"l1": dict(name="l1", weight=1.0, target="gt_usm")}, type_safe=False)


@dataclass(frozen=True)
class LossTerm:
    key: str
    name: str
    weight: float
    start: int
    end: int | None
    target: str
    fn: object  # called with the inputs it declares, in that order; returns a scalar or a dict of scalars

    @property
    def inputs(self):
        return tuple(getattr(self.fn, "inputs", DEFAULT_INPUTS))

    @property
    def on_discriminator(self):
        return any(i in ON_DISCRIMINATOR for i in self.inputs)


class _Adversarial:
    """G's adversarial term: the GANObjective's generator loss on D's logits (relativistic: also on the real ones)."""

    def __init__(self, objective):
        self.objective = objective
        self.inputs = ("fake_logits", "real_logits") if objective.relativistic else ("fake_logits",)

    def __call__(self, fake_logits, real_logits=None):
        return self.objective.generator_loss(fake_logits, real_logits)


class _FeatureMatching:
    inputs = ("fake_features", "real_features")

    def __init__(self, criterion="l1"):
        self.criterion = criterion

    def __call__(self, fake_features, real_features):
        return gan.feature_matching_loss(list(fake_features), list(real_features), self.criterion)


def _entries(cfg_losses):
    if hasattr(cfg_losses, "to_dict"):
        cfg_losses = cfg_losses.to_dict()
    if isinstance(cfg_losses, dict):  # named entries: {'pix': {...}, 'percep': {...}}
        return [{"key": k, **dict(v)} for k, v in cfg_losses.items()]
    return [dict(e.to_dict() if hasattr(e, "to_dict") else e) for e in cfg_losses]


def _int_or_none(v):
    return None if v is None else int(float(v))


class LossSet:
    """The generator objective. `loss_set(sr, gt, step=..., **inputs)` -> (total, {key: weighted value}).

    Jit-able and pure given its arguments. `feature_params` ({term key: weights}) holds the loss's own weights (the
    VGG19 of the perceptual and contextual losses) so that a trainer passes them into its jitted step as the
    `feature_params=` input. `gan` is the `GANObjective` (or None) whose discriminator_loss / r1_penalty the D update
    uses. `inputs` names every input some term takes (see the module docstring). Terms on the discriminator's outputs
    come after the others, the adversarial one first.
    """

    def __init__(self, terms, gan_objective=None, gan_ramp=(0, 0)):
        terms = tuple(terms)
        self.terms = tuple(t for t in terms if not t.on_discriminator) + tuple(
            sorted((t for t in terms if t.on_discriminator), key=lambda t: t.name != "gan"))
        self.gan = gan_objective
        self.gan_ramp = gan_ramp
        self.feature_params = {t.key: t.fn.params for t in self.terms if "params" in t.inputs}
        self.inputs = frozenset(i for t in self.terms for i in t.inputs)

    def without_gan(self):
        """The same objective with no term on the discriminator: what G trains on before gan.start_step."""
        return LossSet([t for t in self.terms if not t.on_discriminator])

    def with_gan_ramp(self, start, steps):
        """The adversarial weight ramped linearly over `steps` steps from `start` (OpenSR-SRGAN's adversarial
        warm-up): weight * min(1, (step - start + 1) / steps); steps=0 is the full weight at once."""
        return LossSet(self.terms, self.gan, (int(start), int(steps)))

    def __call__(self, sr, gt, *, step=0, gt_usm=None, feature_params=None, **inputs):
        feats = self.feature_params if feature_params is None else feature_params
        given = {"sr": sr.astype(jnp.float32), "gt": gt.astype(jnp.float32),
                 "gt_usm": None if gt_usm is None else gt_usm.astype(jnp.float32), **inputs}
        total, logs = jnp.zeros((), jnp.float32), {}
        for t in self.terms:
            args = []
            for name in t.inputs:
                value = feats[t.key] if name == "params" else given.get(t.target if name == "target" else name)
                if value is None:
                    what = "gt_usm" if name == "target" else name
                    raise ValueError(f"loss {t.key!r} needs the input {what!r}, which was not given")
                args.append(value)
            value, parts = self._gated(t, step, t.fn, tuple(args))
            if t.name == "gan" and self.gan_ramp[1]:
                start, ramp = self.gan_ramp
                factor = jnp.clip((step - start + 1) / ramp, 0.0, 1.0).astype(jnp.float32)
                value = value * factor
                logs[f"{t.key}_weight"] = t.weight * factor
            total, logs = total + value, {**logs, t.key: value, **parts}
        return total, logs

    @staticmethod
    def _gated(term, step, fn, args):
        """weight * fn(*args) inside [start, end); components of dict-valued losses logged as key_part."""
        def run(*a):
            out = fn(*a)
            parts = out if isinstance(out, dict) else {}
            value = sum(parts.values()) if parts else out
            return term.weight * value.astype(jnp.float32), {f"{term.key}_{k}": term.weight * v for k, v in parts.items()}

        if term.start <= 0 and term.end is None:
            return run(*args)
        active = step >= term.start
        if term.end is not None:
            active = jnp.logical_and(active, step < term.end)
        shapes = jax.eval_shape(run, *args)
        zeros = lambda *a: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)  # noqa: E731
        return jax.lax.cond(active, run, zeros, *args)


def build_losses(cfg_losses) -> LossSet:
    """LossSet from the config list (schema in the module docstring)."""
    terms, gan_obj, seen = [], None, set()
    for e in _entries(cfg_losses):
        if "name" not in e:
            raise ValueError(f"loss entry {e} has no 'name'")
        name = e["name"]
        opts = {k: v for k, v in e.items() if k not in _TERM_FIELDS}
        key = e.get("key") or name
        if key in seen:
            raise ValueError(f"loss key {key!r} appears twice; give the entries distinct 'key's")
        seen.add(key)
        target = e.get("target", "gt")
        if target not in ("gt", "gt_usm"):
            raise ValueError(f"loss {key!r}: target must be 'gt' or 'gt_usm', got {target!r}")
        common = dict(key=key, name=name, weight=float(e.get("weight", 1.0)), start=_int_or_none(e.get("start", 0)) or 0,
                      end=_int_or_none(e.get("end")), target=target)
        if name in ("gan", "feature_matching") and any(t.name == name for t in terms):
            raise ValueError(f"only one {name!r} loss entry is allowed")
        if name == "gan":
            gan_obj = GANObjective(**opts)
            fn = _Adversarial(gan_obj)
        elif name == "feature_matching":
            if set(opts) - {"criterion"}:
                raise ValueError(f"loss {key!r}: feature_matching takes only 'criterion', got {sorted(opts)}")
            fn = _FeatureMatching(**opts)
        elif name in LOSSES:
            if name in ("perceptual", "contextual"):
                opts["config_field"] = f"losses[{key}].vgg_weights"
            fn = LOSSES[name](**opts)
        else:
            raise ValueError(f"unknown loss {name!r}; available: {sorted(LOSSES) + ['gan', 'feature_matching']}")
        terms.append(LossTerm(fn=fn, **common))
    return LossSet(terms, gan_obj)


__all__ = ["LOSSES", "LossSet", "LossTerm", "build_losses", "default_config", "ContextualLoss", "GANObjective", "LDLLoss",
           "PerceptualLoss", "gan"]
