"""A toy second training kind, written against `jaxsr.train.kind` without touching the loop: a 1x denoiser (three
convolutions) that learns to remove Gaussian noise from crops of real photographs, with its own state, step, data,
metric and export. tests/test_kinds.py runs it through the shared loop."""
import json
import os
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from safetensors.numpy import save_file

from jaxsr import parallel
from jaxsr.train.kind import Scores

SIGMA = 0.1
PHOTOS = ("astronaut", "coffee", "chelsea")


class Net(nnx.Module):
    def __init__(self, rngs):
        self.c1, self.c2, self.c3 = (nnx.Conv(i, o, (3, 3), rngs=rngs) for i, o in ((3, 8), (8, 8), (8, 3)))

    def __call__(self, x):
        return x + self.c3(jax.nn.relu(self.c2(jax.nn.relu(self.c1(x)))))


class ToyState(struct.PyTreeNode):
    step: jax.Array
    params: dict
    opt_state: tuple
    rng: jax.Array
    nonfinite: jax.Array


def _photo(name):
    import skimage.data

    return getattr(skimage.data, name)()[..., :3].astype(np.float32) / 255.0


class Crops:
    """Clean crops at seeded places, a batch per call; its position is the number of batches drawn (resumable)."""

    def __init__(self, batch, size, seed):
        self.photos, self.batch, self.size, self.seed, self.position = [_photo(n) for n in PHOTOS[:2]], batch, size, seed, 0

    def __next__(self):
        g = np.random.default_rng([self.seed, self.position])
        self.position += 1
        out = []
        for _ in range(self.batch):
            p = self.photos[g.integers(len(self.photos))]
            y, x = g.integers(p.shape[0] - self.size), g.integers(p.shape[1] - self.size)
            out.append(p[y : y + self.size, x : x + self.size])
        return {"gt": np.stack(out)}

    def get_state(self):
        return json.dumps({"position": self.position})

    def set_state(self, state):
        self.position = state["position"] if isinstance(state, dict) else json.loads(state)["position"]

    def close(self):
        pass


def _psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a) - b) ** 2)))


class Denoiser:
    resolve_config = staticmethod(lambda cfg, workdir: cfg)
    check = staticmethod(lambda cfg: None)
    carryable = ()

    def __init__(self, cfg, workdir, mesh, meta=None):
        self.graphdef, params = nnx.split(Net(nnx.Rngs(cfg.seed)))
        tx = optax.adam(cfg.optim.lr)
        state = ToyState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.PRNGKey(cfg.seed), jnp.zeros((), jnp.int32))
        self.state = parallel.replicate(mesh, state)
        clean = _photo(PHOTOS[2])[:64, :64]
        noisy = np.clip(clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32), 0, 1)
        self.data = SimpleNamespace(train=Crops(cfg.train.batch_size, cfg.data.gt_size, cfg.seed), val=[(noisy, clean)])
        self.meta = {"toy": "denoiser"}

        def step(state, batch):
            rng, key = jax.random.split(state.rng)
            noisy = batch["gt"] + SIGMA * jax.random.normal(key, batch["gt"].shape)

            def loss_fn(params):
                return jnp.mean((nnx.merge(self.graphdef, params)(noisy) - batch["gt"]) ** 2)

            loss, grads = jax.value_and_grad(loss_fn)(state.params)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            ok = jnp.isfinite(loss)
            new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (optax.apply_updates(state.params, updates), opt_state),
                               (state.params, state.opt_state))
            return state.replace(step=state.step + 1, params=new[0], opt_state=new[1], rng=rng,
                                 nonfinite=jnp.where(ok, 0, state.nonfinite + 1)), {"loss": loss, "mse": loss}

        self._step = jax.jit(step, donate_argnums=(0,), out_shardings=parallel.replicated(mesh))

    def summary(self, state):
        return f"toy denoiser, {sum(x.size for x in jax.tree.leaves(state.params)):,} parameters"

    def train_step(self, state, batch, step):
        return self._step(state, batch)

    def resumed(self, state, carry, saved_config):
        return state

    def deployable(self, state):
        return nnx.merge(self.graphdef, parallel.to_host(state.params))

    def validate(self, model):
        noisy, clean = self.data.val[0]
        out = np.clip(np.asarray(model(noisy[None]))[0], 0, 1)
        values = {"psnr": _psnr(out, clean)}
        return Scores(values, f"PSNR {values['psnr']:.3f} dB (noisy input: {_psnr(noisy, clean):.3f} dB)", [(noisy, out, clean)])

    def after_validation(self, state, value):
        return state

    def export(self, model, base):
        save_file({"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model))},
                  base + ".safetensors")

    def mirror(self, model, base, info):
        self.export(model, base)
        return base + ".safetensors"

    def log_images(self, state, batch, step, board):
        gt = np.asarray(parallel.to_host(batch["gt"]))[:2]
        board.images(step, "train/noisy_out_clean", gt, gt, gt)


def config(**train):
    from jaxsr.train.config import base_config, resolve

    c = base_config()
    c.kind, c.name, c.scale = "toy_denoise", "toy", 1
    c.data.gt_size = c.degrade.gt_size = 32
    c.optim.lr = 3e-3
    c.train.update(**{**dict(total_steps=8, batch_size=2, log_every=1, ckpt_every=100), **train})
    c.val.update(every=4, at_start=False)
    return resolve(c)


if __name__ == "__main__":  # python tests/toy_kind.py WORKDIR [train.field=value ...]: one run, as a command would
    from jaxsr.train import loop

    run = loop.start(config(**{k: int(v) for k, v in (a.split("=") for a in sys.argv[2:])}), sys.argv[1], kind=Denoiser)
    run.run()
    sys.exit(130 if run.stop_requested == "SIGINT" else 0)
