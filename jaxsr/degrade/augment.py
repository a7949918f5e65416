"""Batch augmentations of training pairs on the device: mixup, cutmix, resizemix, cutblur (traiNNer-redux's MoA,
`traiNNer/data/batchaug.py`, after victorca25/traiNNer's `codes/dataops/batchaug.py`).

As in MoA, at most one augmentation is applied to a batch, drawn per batch with the configured probabilities
(none with the rest); the partner of each sample is a random permutation of the batch; the amounts and boxes are
drawn per sample. `draw` makes every draw, `apply` does the image work, `augment` is both.

Definitions (LQ of h x w, GT of sh x sw; a box is drawn on the LQ grid and is the same box times s on the GT):
- mixup (Zhang et al., ICLR 2018): lam ~ Beta(a, a) (a = mixup_alpha, 1.2 as in CutBlur's setting);
  LQ = lam LQ + (1 - lam) LQ[perm], GT likewise with the same lam.
- cutmix (Yun et al., ICCV 2019): lam ~ Beta(a, a), a box of sides sqrt(1 - lam) (h, w) centred on a uniform
  pixel and clipped to the image, filled from the partner's same box in both LQ and GT.
- resizemix (Qin et al., 2020): tau ~ U(resizemix_scope), a box of sides tau (h, w) at a uniform position inside,
  filled with the partner's whole LQ and GT resized (bicubic, torch's F.interpolate) to the box.
- cutblur (Yoo et al., CVPR 2020): a box of sides r (h, w), r ~ N(cutblur_alpha, 0.01), at a uniform position
  inside; half the samples get the GT's content in the box (inside), the others everywhere but the box
  (outside). The GT is unchanged. The GT's content at the LQ's size is MATLAB-bicubic imresize(GT, 1/s):
  traiNNer-redux gets the same effect by a bicubic round trip of the whole LQ (up by s, paste, down by s),
  which also blurs the LQ; here the LQ outside the pasted region stays exactly as it was.
The GT changes under mixup, cutmix and resizemix, so gt_usm is recomputed from the new GT.
"""
import jax
import jax.numpy as jnp
import ml_collections

from . import kernels, ops

NAMES = ("mixup", "cutmix", "resizemix", "cutblur")


def default_config():
    """The `degrade.augment` block: the probability of each batch augmentation (at most one per batch, the sum
    at most 1; all 0: off) and its amounts."""
    c = ml_collections.ConfigDict()
    c.mixup, c.cutmix, c.resizemix, c.cutblur = 0.0, 0.0, 0.0, 0.0
    c.mixup_alpha = 1.2  # lam ~ Beta(a, a)
    c.cutmix_alpha = 1.0  # lam ~ Beta(a, a); the box covers 1 - lam of the image before clipping
    c.resizemix_scope = (0.1, 0.8)  # tau ~ U(lo, hi): box sides tau * image sides (ResizeMix's range)
    c.cutblur_alpha = 0.7  # box sides ~ N(alpha, 0.01) * image sides (CutBlur's setting)
    return c


def enabled(cfg):
    """The augmentations with a probability > 0, in NAMES order."""
    return [n for n in NAMES if cfg[n] > 0]


def check(cfg):
    """A message naming the field that is wrong, or None."""
    for n in NAMES:
        if not 0 <= cfg[n] <= 1:
            return f"degrade.augment.{n} must be a probability in [0, 1], got {cfg[n]!r}"
    total = sum(cfg[n] for n in NAMES)
    if total > 1 + 1e-9:
        return (f"degrade.augment: at most one augmentation is applied per batch, so the probabilities "
                f"({', '.join(f'{n}={cfg[n]:g}' for n in NAMES)}) must sum to at most 1, not {total:g}")
    lo, hi = cfg.resizemix_scope
    if cfg.mixup_alpha <= 0 or cfg.cutmix_alpha <= 0 or not 0 < lo <= hi <= 1 or not 0 < cfg.cutblur_alpha <= 1:
        return ("degrade.augment: mixup_alpha and cutmix_alpha must be > 0, resizemix_scope (lo, hi) with "
                "0 < lo <= hi <= 1, cutblur_alpha in (0, 1]")
    return None


def draw(key, cfg, batch, lq_hw):
    """Every random draw for one batch: `which` (0 none, then the enabled augmentations in NAMES order) and the
    partner permutation per batch; per sample (B,) arrays of amounts and boxes on the LQ grid, for the enabled
    augmentations only (each from its own keys: enabling one does not change another's draws)."""
    h, w = lq_hw
    names = enabled(cfg)
    ks = jax.random.split(key, 13)
    b = (batch,)

    def inside(kh, kw, sides_h, sides_w):  # a box at a uniform position such that it lies inside
        return dict(top=jax.random.randint(kh, b, 0, h - sides_h + 1), left=jax.random.randint(kw, b, 0, w - sides_w + 1),
                    bh=sides_h, bw=sides_w)

    def mixup():
        return jax.random.beta(ks[2], cfg.mixup_alpha, cfg.mixup_alpha, b)

    def cutmix():  # sides sqrt(1 - lam) of the image around a uniform centre, clipped (CutMix's rand_bbox)
        ratio = jnp.sqrt(1.0 - jax.random.beta(ks[3], cfg.cutmix_alpha, cfg.cutmix_alpha, b))
        ch, cw = (ratio * h).astype(jnp.int32), (ratio * w).astype(jnp.int32)
        cy, cx = jax.random.randint(ks[4], b, 0, h), jax.random.randint(ks[5], b, 0, w)
        y0, x0 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cx - cw // 2, 0, w)
        return dict(top=y0, left=x0, bh=jnp.clip(cy + ch // 2, 0, h) - y0, bw=jnp.clip(cx + cw // 2, 0, w) - x0)

    def resizemix():
        lo, hi = cfg.resizemix_scope
        tau = jax.random.uniform(ks[6], b, minval=lo, maxval=hi)
        rh, rw = jnp.maximum(1, (tau * h).astype(jnp.int32)), jnp.maximum(1, (tau * w).astype(jnp.int32))
        return dict(inside(ks[7], ks[8], rh, rw), tau=tau)

    def cutblur():
        r = jnp.clip(cfg.cutblur_alpha + 0.01 * jax.random.normal(ks[9], b), 0.0, 1.0)
        bh, bw = (r * h).astype(jnp.int32), (r * w).astype(jnp.int32)
        return dict(inside(ks[10], ks[11], bh, bw), inside=jax.random.bernoulli(ks[12], 0.5, b))

    probs = [max(0.0, 1.0 - sum(cfg[n] for n in names))] + [cfg[n] for n in names]
    draws = dict(mixup=mixup, cutmix=cutmix, resizemix=resizemix, cutblur=cutblur)
    return dict(which=kernels.pick(jax.random.uniform(ks[0]), probs), perm=jax.random.permutation(ks[1], batch),
                **{("lam" if n == "mixup" else n): draws[n]() for n in names})


def box_mask(box, hw, s=1):
    """(B, H, W, 1) float mask of the boxes (LQ-grid coordinates times s)."""
    rows = jnp.arange(hw[0])[None, :, None, None]
    cols = jnp.arange(hw[1])[None, None, :, None]
    e = lambda v: v[:, None, None, None] * s  # noqa: E731
    in_rows = (rows >= e(box["top"])) & (rows < e(box["top"] + box["bh"]))
    return (in_rows & (cols >= e(box["left"])) & (cols < e(box["left"] + box["bw"]))).astype(jnp.float32)


def _resize_into(x, box, s):
    """Each sample's image x[b] resized (bicubic) to its box (times s), placed there on a zero canvas of x's size."""
    n_h, n_w = x.shape[1:3]

    def matrix(n, size, offset):
        m = ops.resize_matrix("bicubic", n, size, n, n)  # rows >= size are zero
        return jnp.roll(m, offset, axis=0)

    mh = jax.vmap(lambda size, off: matrix(n_h, size, off))(box["bh"] * s, box["top"] * s)
    mw = jax.vmap(lambda size, off: matrix(n_w, size, off))(box["bw"] * s, box["left"] * s)
    y = jnp.einsum("boh,bhwc->bowc", mh, x, precision=jax.lax.Precision.HIGHEST)
    return jnp.clip(jnp.einsum("bpw,bowc->bopc", mw, y, precision=jax.lax.Precision.HIGHEST), 0.0, 1.0)


def operations(params, lq, gt, scale):
    """{name: () -> (lq, gt)}: each augmentation of the batch with the drawn params."""
    s, perm = scale, params["perm"]
    lq_hw, gt_hw = lq.shape[1:3], gt.shape[1:3]

    def paste(box, lq_src, gt_src):
        m, mh = box_mask(box, lq_hw), box_mask(box, gt_hw, s)
        return lq * (1 - m) + lq_src * m, gt * (1 - mh) + gt_src * mh

    def mixup():
        lam = params["lam"][:, None, None, None]
        return lam * lq + (1 - lam) * lq[perm], lam * gt + (1 - lam) * gt[perm]

    def cutmix():
        return paste(params["cutmix"], lq[perm], gt[perm])

    def resizemix():
        box = params["resizemix"]
        return paste(box, _resize_into(lq[perm], box, 1), _resize_into(gt[perm], box, s))

    def cutblur():
        box = params["cutblur"]
        m = box_mask(box, lq_hw)
        m = jnp.where(box["inside"][:, None, None, None], m, 1 - m)
        return lq * (1 - m) + ops.imresize(gt, 1.0 / s) * m, gt

    return dict(mixup=mixup, cutmix=cutmix, resizemix=resizemix, cutblur=cutblur)


def apply(params, lq, gt, gt_usm, cfg, scale, usm):
    """(lq, gt, gt_usm) after the augmentation that params['which'] picks (a lax.switch: only it runs); `usm(gt)`
    recomputes the sharpened GT where the GT changed."""
    fns = operations(params, lq, gt, scale)

    def branch(name):
        def run():
            new_lq, new_gt = fns[name]()
            return new_lq, new_gt, (gt_usm if name == "cutblur" else usm(new_gt))
        return run

    return jax.lax.switch(params["which"], [lambda: (lq, gt, gt_usm)] + [branch(n) for n in enabled(cfg)])


def augment(key, lq, gt, gt_usm, cfg, scale, usm):
    """Draw and apply: (lq, gt, gt_usm)."""
    return apply(draw(key, cfg, lq.shape[0], lq.shape[1:3]), lq, gt, gt_usm, cfg, scale, usm)
