"""Adversarial objectives for a trainer that updates G and D separately (BasicSR `GANLoss`).

`gan_type`: 'vanilla' (BCE with logits), 'lsgan' (MSE to 1/0), 'hinge'. `relativistic=True` is ESRGAN's
relativistic average GAN: each side is judged against the mean of the other. The discriminator loss is
real + fake (BasicSR back-propagates both); the config weight applies to the generator side only, as
in BasicSR. R1 (gradient penalty on real images) is lazy: every `r1_every` D steps, scaled by
`r1_every` so its average strength does not depend on the interval (StyleGAN2). `feature_matching_loss` compares
D's intermediate features on SR and HR (the discriminators' `features=True` call).
"""
import jax
import jax.numpy as jnp
from ml_collections import ConfigDict, config_dict

from jaxsr import archs
from jaxsr.losses.pixel import get_criterion


def _bce_with_logits(x, target):
    return jnp.mean(jnp.maximum(x, 0) - x * target + jnp.log1p(jnp.exp(-jnp.abs(x))))


def gan_loss(x, target_is_real, gan_type, is_disc):
    """BasicSR GANLoss(x, target_is_real, is_disc) for one batch of logits."""
    x = x.astype(jnp.float32)
    if gan_type == "vanilla":
        return _bce_with_logits(x, 1.0 if target_is_real else 0.0)
    if gan_type == "lsgan":
        return jnp.mean((x - (1.0 if target_is_real else 0.0)) ** 2)
    if gan_type == "hinge":
        if is_disc:
            return jnp.mean(jax.nn.relu(1 - x)) if target_is_real else jnp.mean(jax.nn.relu(1 + x))
        return -jnp.mean(x)
    raise ValueError(f"unknown gan_type {gan_type!r}; choose vanilla, lsgan or hinge")


class GANObjective:
    def __init__(self, gan_type="vanilla", relativistic=False, r1_weight=0.0, r1_every=16):
        gan_loss(jnp.zeros(1), True, gan_type, False)  # validates gan_type early
        self.gan_type = gan_type
        self.relativistic = bool(relativistic)
        self.r1_weight = float(r1_weight)
        self.r1_every = int(r1_every)

    def generator_loss(self, fake_logits, real_logits=None):
        """Adversarial loss of G (unweighted). Relativistic needs D's logits on real images too."""
        if not self.relativistic:
            return gan_loss(fake_logits, True, self.gan_type, False)
        if real_logits is None:
            raise ValueError("relativistic GAN loss needs real_logits (D on the ground truth)")
        real = jax.lax.stop_gradient(real_logits.astype(jnp.float32))
        fake = fake_logits.astype(jnp.float32)
        return 0.5 * (gan_loss(real - fake.mean(), False, self.gan_type, False) + gan_loss(fake - real.mean(), True, self.gan_type, False))

    def discriminator_loss(self, real_logits, fake_logits):
        """(total, {'d_real', 'd_fake'}) for D; pass logits of the detached generator output as fake."""
        real, fake = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
        if self.relativistic:
            d_real = 0.5 * gan_loss(real - jax.lax.stop_gradient(fake).mean(), True, self.gan_type, True)
            d_fake = 0.5 * gan_loss(fake - jax.lax.stop_gradient(real).mean(), False, self.gan_type, True)
        else:
            d_real = gan_loss(real, True, self.gan_type, True)
            d_fake = gan_loss(fake, False, self.gan_type, True)
        return d_real + d_fake, {"d_real": d_real, "d_fake": d_fake, "d_out_real": real.mean(), "d_out_fake": fake.mean()}

    def r1_due(self, step):
        """Whether this D step adds the R1 penalty (a traced bool; use with jax.lax.cond)."""
        return jnp.logical_and(self.r1_weight > 0, step % self.r1_every == 0)

    def r1_penalty(self, d_logits_fn, real_images):
        """r1_weight/2 * E_batch ||grad_x D(x)||^2 on real images, times r1_every (lazy regularisation).

        `d_logits_fn(images) -> logits` must be the discriminator with its parameters closed over, so that
        the penalty's gradient reaches them.
        """
        x = real_images.astype(jnp.float32)
        g = jax.grad(lambda im: jnp.sum(d_logits_fn(im).astype(jnp.float32)))(x)
        per_image = jnp.sum(g**2, axis=tuple(range(1, g.ndim)))
        return 0.5 * self.r1_weight * self.r1_every * jnp.mean(per_image)


def feature_matching_loss(fake_features, real_features, criterion="l1"):
    """Mean over D's layers of criterion(D_l(sr), D_l(hr)), HR features held constant (victorca25/traiNNer's
    `gan_featmaps` term, codes/models/losses.py: an L1 per layer, averaged). Lists as the discriminators return
    them with features=True."""
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError(f"feature matching needs as many SR as HR features, got {len(fake_features)} and {len(real_features)}")
    crit = get_criterion(criterion)
    total = sum(crit(f.astype(jnp.float32), jax.lax.stop_gradient(r).astype(jnp.float32)) for f, r in zip(fake_features, real_features))
    return total / len(fake_features)


def default_config():
    """The `gan` section of a run: whether D trains, from when, and which discriminator (a spec for jaxsr.archs)."""
    c = ConfigDict(type_safe=False)
    c.enabled = False
    c.start_step = 0  # G-only warm-up steps before D joins
    c.ramp_steps = 0  # the adversarial weight grows linearly to its value over this many steps from start_step (0: at once)
    # arch 'unet' (Real-ESRGAN's U-Net SN; skip_connection) or 'vgg' (ESRGAN's VGG-style; input_size 128 or 256)
    unet, vgg = archs.get("unet").defaults, archs.get("vgg").defaults  # vgg's input_size is kept for a switch of arch
    c.discriminator = ConfigDict(dict(arch="unet", num_feat=unet["num_feat"], skip_connection=unet["skip_connection"],
                                      input_size=vgg["input_size"]), type_safe=False)
    c.init_weights = config_dict.placeholder(str)  # a BasicSR/Real-ESRGAN net_d file
    c.freeze_blocks = 0  # FreezeD: the first k blocks of D keep their (pretrained) weights (jaxsr.optim.frozen_blocks)
    return c
