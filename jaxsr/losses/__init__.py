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

Inputs beyond (sr, gt): `ldl` compares with the EMA model's output on the same LQ (`sr_ema=`, no gradient;
`loss_set.needs_ema`); `feature_matching` takes the discriminator's features (`fake_features=`, `real_features=`
from `disc(x, features=True)`; `loss_set.needs_d_features`); `gan` takes its logits.

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
from jaxsr.losses.perceptual import PerceptualLoss, VGGFeatureLoss

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
_SPECIAL = ("gan", "feature_matching")  # terms on the discriminator's outputs, not on (sr, gt)
_TERM_FIELDS = ("name", "weight", "start", "end", "target", "key")


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
    fn: object  # (sr, gt) -> scalar or dict of scalars; VGG feature losses also take params, ldl sr_ema


def _entries(cfg_losses):
    if hasattr(cfg_losses, "to_dict"):
        cfg_losses = cfg_losses.to_dict()
    if isinstance(cfg_losses, dict):  # named entries: {'pix': {...}, 'percep': {...}}
        return [{"key": k, **dict(v)} for k, v in cfg_losses.items()]
    return [dict(e.to_dict() if hasattr(e, "to_dict") else e) for e in cfg_losses]


def _int_or_none(v):
    return None if v is None else int(float(v))


class LossSet:
    """The generator objective. `loss_set(sr, gt, ...)` -> (total, {key: weighted value}).

    Jit-able and pure given its arguments. `feature_params` (default `self.feature_params`) holds the weights of
    the feature nets (VGG19 of the perceptual and contextual losses) so that a trainer can pass them into its
    jitted step as an argument. `gan` is the `GANObjective` (or None) whose discriminator_loss / r1_penalty the D
    update uses. `needs_ema` / `needs_d_features` say which extra inputs a call must carry.
    """

    def __init__(self, terms, gan_objective=None, gan_term=None, fm_term=None, gan_ramp=(0, 0)):
        self.terms = tuple(terms)
        self.gan = gan_objective
        self.gan_term = gan_term
        self.fm_term = fm_term
        self.gan_ramp = gan_ramp
        self.feature_params = {t.key: t.fn.params for t in self.terms if isinstance(t.fn, VGGFeatureLoss)}
        self.needs_ema = any(getattr(t.fn, "needs_ema", False) for t in self.terms)
        self.needs_d_features = fm_term is not None

    def without_gan(self):
        """The same objective with no term on the discriminator: what G trains on before gan.start_step."""
        return LossSet(self.terms)

    def with_gan_ramp(self, start, steps):
        """The adversarial weight ramped linearly over `steps` steps from `start` (OpenSR-SRGAN's adversarial
        warm-up): weight * min(1, (step - start + 1) / steps); steps=0 is the full weight at once."""
        return LossSet(self.terms, self.gan, self.gan_term, self.fm_term, (int(start), int(steps)))

    def __call__(self, sr, gt, *, gt_usm=None, step=0, fake_logits=None, real_logits=None, feature_params=None, sr_ema=None,
                 fake_features=None, real_features=None):
        feats = self.feature_params if feature_params is None else feature_params
        sr = sr.astype(jnp.float32)
        targets = {"gt": gt.astype(jnp.float32), "gt_usm": None if gt_usm is None else gt_usm.astype(jnp.float32)}
        if self.needs_ema and sr_ema is None:
            raise ValueError("the objective has an 'ldl' term: pass sr_ema (the EMA generator's output on the same LQ)")
        total, logs = jnp.zeros((), jnp.float32), {}
        for t in self.terms:
            ref = targets[t.target]
            if ref is None:
                raise ValueError(f"loss {t.key!r} uses target 'gt_usm' but no gt_usm was given")
            args = (sr, ref, feats[t.key]) if t.key in feats else (sr, ref)
            if getattr(t.fn, "needs_ema", False):
                args += (sr_ema,)
            value, parts = self._gated(t, step, t.fn, args)
            total, logs = total + value, {**logs, t.key: value, **parts}
        if self.gan_term is not None:
            if fake_logits is None:
                raise ValueError("the objective has a 'gan' term: pass fake_logits (D on the generator output)")
            t = self.gan_term
            value, _ = self._gated(t, step, self.gan.generator_loss, (fake_logits, real_logits))
            start, ramp = self.gan_ramp
            if ramp:
                factor = jnp.clip((step - start + 1) / ramp, 0.0, 1.0).astype(jnp.float32)
                value = value * factor
                logs[f"{t.key}_weight"] = t.weight * factor
            total, logs = total + value, {**logs, t.key: value}
        if self.fm_term is not None:
            if fake_features is None or real_features is None:
                raise ValueError("the objective has a 'feature_matching' term: pass fake_features and real_features "
                                 "(D's features=True outputs on SR and on HR)")
            t = self.fm_term
            value, _ = self._gated(t, step, t.fn, (list(fake_features), list(real_features)))
            total, logs = total + value, {**logs, t.key: value}
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
    terms, gan_obj, gan_term, fm_term, seen = [], None, None, None, set()
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
        if name in _SPECIAL and (gan_term if name == "gan" else fm_term) is not None:
            raise ValueError(f"only one {name!r} loss entry is allowed")
        if name == "gan":
            gan_obj = GANObjective(**opts)
            gan_term = LossTerm(fn=None, **common)
            continue
        if name == "feature_matching":
            criterion = opts.pop("criterion", "l1")
            if opts:
                raise ValueError(f"loss {key!r}: feature_matching takes only 'criterion', got {sorted(opts)}")
            fm_term = LossTerm(fn=lambda fake, real: gan.feature_matching_loss(fake, real, criterion), **common)
            continue
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; available: {sorted(LOSSES) + list(_SPECIAL)}")
        if name in ("perceptual", "contextual"):
            opts["config_field"] = f"losses[{key}].vgg_weights"
        terms.append(LossTerm(fn=LOSSES[name](**opts), **common))
    return LossSet(terms, gan_obj, gan_term, fm_term)


__all__ = ["LOSSES", "LossSet", "LossTerm", "build_losses", "default_config", "ContextualLoss", "GANObjective", "LDLLoss",
           "PerceptualLoss", "gan"]
