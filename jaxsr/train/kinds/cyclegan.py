"""The `cyclegan` training kind: two generators and two PatchGANs on unaligned domains, as junyanz's
`models/cycle_gan_model.py` trains them (docs/translation.md).

Names as the reference's code: G_A maps A to B, G_B maps B to A; D_A judges B images (real B against G_A's fakes), D_B
judges A images. Each step, in one compiled program, in the reference's order: the forward (fake_B = G_A(A), rec_A =
G_B(fake_B), fake_A = G_B(B), rec_B = G_A(fake_A)); G_A and G_B's update (one Adam over both) on
GAN(D_A(fake_B)) + GAN(D_B(fake_A)) + lambda_A L1(rec_A, A) + lambda_B L1(rec_B, B) and, where lambda_identity > 0,
lambda_B lambda_identity L1(G_A(B), B) + lambda_A lambda_identity L1(G_B(A), A); then D_A and D_B's update (one Adam
over both), each 0.5 (GAN(D(real), real) + GAN(D(fake from the pool), fake)).

The history pool (util/image_pool.py, pool_size 50 by default): per image of the batch, while the pool is not full
the image goes in and is returned; then with probability 1/2 a stored image (uniform) is returned and replaced by it,
else the image itself. The pool lives in the train state (`queue`), drawn from the state's key, so a resume continues it
bit for bit (the reference draws from Python's `random`). GAN modes as `jaxsr.train.kinds.pix2pix`. Warm starts:
cyclegan.pretrain_model_G_A / _G_B / _D_A / _D_B (traiNNer's names). Exports: <name>_G_A.pth and <name>_G_B.pth in
junyanz's layout (his latest_net_G_A.pth / latest_net_G_B.pth).
"""
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from ml_collections import config_dict

from jaxsr import archs, evaluate, optim, parallel, weights
from jaxsr.data import aligned, unaligned
from jaxsr.data.loader import host_batch_size
from jaxsr.errors import ConfigError
from jaxsr.imageio import quantize
from jaxsr.infer import upscale
from jaxsr.metrics import mean_over_images
from jaxsr.train import state as state_lib
from jaxsr.train.kind import Scores, refuse_unsupported
from jaxsr.train.kinds.pix2pix import GAN_MODES, GENERATORS, gan_term, generator_multiple, to_range, translation_refusals
from jaxsr.train.kinds.sr import SR, Data, compute_dtype
from jaxsr.train.logger import log

NETS = ("G_A", "G_B", "D_A", "D_B")


def default_config():
    """The `cyclegan` section (the reference's option names)."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.direction = "AtoB"  # 'BtoA' swaps the domains
    c.serial = False  # True: B[i mod |B|] with A[i] and A unshuffled (--serial_batches); False: a random B
    c.preprocess = "resize_and_crop"  # as pix2pix.preprocess (jaxsr.data.aligned)
    c.load_size = 286
    c.crop_size = 256
    c.center_crop_size = 256
    c.no_flip = False
    c.lambda_A = 10.0  # cycle A -> B -> A
    c.lambda_B = 10.0  # cycle B -> A -> B
    c.lambda_identity = 0.5  # times lambda_A / lambda_B on the identity terms; 0: off
    c.pool_size = 50  # the history of fakes the discriminators see; 0: none
    c.gan_mode = "lsgan"
    for net in NETS:  # warm starts: junyanz-layout .pth files (or any file jaxsr.weights.read takes)
        c[f"pretrain_model_{net}"] = config_dict.placeholder(str)
    return c


def check_cyclegan(cfg):
    """What kind='cyclegan' refuses, each in one line naming the field; the checked Preprocess."""
    s = cfg.cyclegan
    if cfg.model.arch not in GENERATORS:
        raise ConfigError(f"kind='cyclegan' trains pix2pix/CycleGAN generators: set model.arch to one of "
                          f"{', '.join(GENERATORS)} (or 'auto' with cyclegan.pretrain_model_G_A), not {cfg.model.arch!r}")
    if int(cfg.scale) != 1:
        raise ConfigError(f"kind='cyclegan' translates at the input's size: set scale=1, not {cfg.scale}")
    if cfg.gan.discriminator.arch != "patchgan":
        raise ConfigError(f"kind='cyclegan' trains PatchGANs: set gan.discriminator.arch='patchgan', not "
                          f"{cfg.gan.discriminator.arch!r}")
    if cfg.init_weights:
        raise ConfigError("kind='cyclegan' has two generators: give cyclegan.pretrain_model_G_A / _G_B instead of init_weights")
    if len(cfg.losses):
        raise ConfigError(f"kind='cyclegan' has its own objective (GAN + cycle + identity): set losses={{}}, not "
                          f"{', '.join(cfg.losses)}")
    if s.direction not in aligned.DIRECTIONS:
        raise ConfigError(f"cyclegan.direction must be 'AtoB' or 'BtoA', got {s.direction!r}")
    if s.gan_mode not in GAN_MODES:
        raise ConfigError(f"cyclegan.gan_mode must be one of {', '.join(GAN_MODES)}, got {s.gan_mode!r}")
    if min(float(s.lambda_A), float(s.lambda_B), float(s.lambda_identity), int(s.pool_size)) < 0:
        raise ConfigError("cyclegan.lambda_A, lambda_B, lambda_identity and pool_size must be >= 0")
    full = {**archs.get(cfg.model.arch).defaults, **cfg.model.to_dict()}
    if float(s.lambda_identity) > 0 and int(full["in_ch"]) != int(full["out_ch"]):
        raise ConfigError(f"cyclegan.lambda_identity > 0 feeds B to G_A: it needs in_ch == out_ch (got {full['in_ch']} and "
                          f"{full['out_ch']}); set lambda_identity=0")
    if not cfg.data.train_dir or cfg.data.hr_dir or cfg.data.packed or cfg.data.sources:
        raise ConfigError("kind='cyclegan' reads data.train_dir's trainA/ and trainB/ (or A/ and B/) and data.val_dir's "
                          "testA/ and testB/ (or A/ and B/); data.hr_dir, data.packed and data.sources are not supported")
    p = aligned.make(s, generator_multiple(cfg.model.to_dict()))
    if not aligned.fixed_size(p) and (int(cfg.train.batch_size) != 1 or int(s.pool_size)):
        raise ConfigError(f"preprocess={s.preprocess!r} leaves each image its own size: set train.batch_size=1 and "
                          "cyclegan.pool_size=0, or add a crop (e.g. 'scale_width_and_crop')")
    refuse_unsupported(cfg, " (its PatchGANs train from the first "
                       "step; no accumulation, plateau or schedule-free optimizer, EMA, float16 loss scaling, "
                       "per-layer statistics, test split or extra validation sets)",
                       ("optim.ema_decay", cfg.optim.ema_decay, bool(cfg.optim.ema_decay)), *translation_refusals(cfg))
    return p


def resolve_config(cfg, workdir):
    """model.arch='auto': the workdir's config.json on a resume, else cyclegan.pretrain_model_G_A's architecture."""
    import json

    if cfg.model.arch != "auto":
        return cfg
    saved = os.path.join(workdir, "config.json") if workdir else None
    if saved and os.path.exists(saved):
        with open(saved) as f:
            model = json.load(f)["model"]
    elif cfg.cyclegan.pretrain_model_G_A:
        if not os.path.exists(cfg.cyclegan.pretrain_model_G_A):
            raise ConfigError(f"cyclegan.pretrain_model_G_A: no such file: {cfg.cyclegan.pretrain_model_G_A}")
        model = {k: v for k, v in weights.read(cfg.cyclegan.pretrain_model_G_A).spec.items() if k != "scale"}
    else:
        raise ConfigError("model.arch='auto' takes the architecture from cyclegan.pretrain_model_G_A, which is not set")
    out = ml_collections.ConfigDict(cfg.to_dict(), type_safe=False)
    out.model = ml_collections.ConfigDict(model, type_safe=False)
    return out


def specs(cfg, resume_spec=None):
    """{G_A: spec, G_B: spec (in_ch and out_ch swapped)}."""
    g_a = resume_spec or {**archs.get(cfg.model.arch).defaults, **cfg.model.to_dict(), "scale": 1}
    return {"G_A": g_a, "G_B": {**g_a, "in_ch": g_a["out_ch"], "out_ch": g_a["in_ch"]}}


def build_nets(cfg, resume_spec=None):
    """({G_A, G_B, D_A, D_B} models, G specs): D_A on G_A's output channels, D_B on G_B's; the pretrain files loaded
    (not on a resume: the checkpoint holds the weights)."""
    g_specs, dtype = specs(cfg, resume_spec), compute_dtype(cfg.compute_dtype)
    d = cfg.gan.discriminator.to_dict()
    nets = {"G_A": archs.build(g_specs["G_A"], rngs=nnx.Rngs(cfg.seed), dtype=dtype),
            "G_B": archs.build(g_specs["G_B"], rngs=nnx.Rngs(cfg.seed + 1), dtype=dtype),
            "D_A": archs.build({**d, "in_ch": int(g_specs["G_A"]["out_ch"])}, rngs=nnx.Rngs(cfg.seed + 2)),
            "D_B": archs.build({**d, "in_ch": int(g_specs["G_B"]["out_ch"])}, rngs=nnx.Rngs(cfg.seed + 3))}
    for net in NETS:
        path = cfg.cyclegan[f"pretrain_model_{net}"]
        if not path or resume_spec is not None:
            continue
        if not os.path.exists(path):
            raise ConfigError(f"cyclegan.pretrain_model_{net}: no such file: {path}")
        kind = "discriminator" if net.startswith("D") else "generator"
        arch = "patchgan" if kind == "discriminator" else g_specs[net]["arch"]
        weights.read(path, arch=arch, kind=kind).load_into(nets[net])
        log.info(f"warm start of {net} from {path}")
    return nets, g_specs


# ------------------------------------------------------------------------------------------------- the pool


def pool_init(size, shape_a, shape_b):
    """The two histories (fakes of A for D_B, fakes of B for D_A) and how many images each holds."""
    return dict(A=jnp.zeros((size, *shape_a), jnp.float32), B=jnp.zeros((size, *shape_b), jnp.float32),
                num=jnp.zeros((2,), jnp.int32))


def pool_query(images, stored, num, key):
    """util/image_pool.py's query on one batch: (images for D, new store, new count)."""
    size, out = stored.shape[0], []
    for i in range(images.shape[0]):
        key, k_p, k_id = jax.random.split(key, 3)
        img = images[i]
        filling = num < size
        swap = (~filling) & (jax.random.uniform(k_p) > 0.5)
        slot = jnp.where(filling, jnp.minimum(num, size - 1), jax.random.randint(k_id, (), 0, size))
        old = stored[slot]
        out.append(jnp.where(swap, old, img))
        stored = stored.at[slot].set(jnp.where(filling | swap, img, old))
        num = num + filling.astype(jnp.int32)
    return jnp.stack(out), stored, num


# ------------------------------------------------------------------------------------------------- the step


class Parts(NamedTuple):
    g_defs: Any  # {G_A, G_B} graphdefs
    d_defs: Any  # {D_A, D_B}
    tx: optax.GradientTransformation
    tx_d: optax.GradientTransformation
    lambda_a: float
    lambda_b: float
    lambda_idt: float
    gan_mode: str
    value_range: tuple


def l1(x, y):
    return jnp.mean(jnp.abs(x - y))


def train_step(p, state, batch):
    """forward -> G_A + G_B update (D fixed) -> D_A + D_B update on the pool's fakes."""
    real_a, real_b = to_range(p, batch["a"]), to_range(p, batch["b"])
    rng, k_a, k_b = jax.random.split(state.rng, 3)

    def g_loss(params):
        g = {n: state_lib.merge(p.g_defs[n], params[n], state.buffers[n]) for n in ("G_A", "G_B")}
        d = {n: state_lib.merge(p.d_defs[n], state.d_params[n], state.d_buffers[n]) for n in ("D_A", "D_B")}
        fake_b = g["G_A"](real_a)
        rec_a = g["G_B"](fake_b)
        fake_a = g["G_B"](real_b)
        rec_b = g["G_A"](fake_a)
        logs = {}
        if p.lambda_idt > 0:
            logs["idt_A"] = l1(g["G_A"](real_b), real_b) * p.lambda_b * p.lambda_idt
            logs["idt_B"] = l1(g["G_B"](real_a), real_a) * p.lambda_a * p.lambda_idt
        logs["G_A"] = gan_term(d["D_A"](fake_b), True, p.gan_mode)
        logs["G_B"] = gan_term(d["D_B"](fake_a), True, p.gan_mode)
        logs["cycle_A"] = l1(rec_a, real_a) * p.lambda_a
        logs["cycle_B"] = l1(rec_b, real_b) * p.lambda_b
        total = sum(logs.values())
        buffers = {n: state_lib.split(m)[2] for n, m in g.items()}
        d_buffers = {n: state_lib.split(m)[2] for n, m in d.items()}
        return total, (logs, buffers, d_buffers, fake_a, fake_b)

    (loss, (logs, buffers, d_buffers, fake_a, fake_b)), grads = jax.value_and_grad(g_loss, has_aux=True)(state.params)
    updates, opt_state = p.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    fake_a, fake_b = jax.lax.stop_gradient(fake_a), jax.lax.stop_gradient(fake_b)
    queue = state.queue
    if queue is not None:
        fake_b, pool_b, num_b = pool_query(fake_b, queue["B"], queue["num"][1], k_b)
        fake_a, pool_a, num_a = pool_query(fake_a, queue["A"], queue["num"][0], k_a)
        queue = dict(A=pool_a, B=pool_b, num=jnp.stack([num_a, num_b]))

    def d_loss(d_params):
        d = {n: state_lib.merge(p.d_defs[n], d_params[n], d_buffers[n]) for n in ("D_A", "D_B")}
        out = {}
        for name, real, fake in (("D_A", real_b, fake_b), ("D_B", real_a, fake_a)):
            out[name] = 0.5 * (gan_term(d[name](real), True, p.gan_mode) + gan_term(d[name](fake), False, p.gan_mode))
        return out["D_A"] + out["D_B"], (out, {n: state_lib.split(m)[2] for n, m in d.items()})

    (loss_d, (d_logs, new_d_buffers)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(state.d_params)
    d_updates, d_opt_state = p.tx_d.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(loss_d) & jnp.isfinite(grad_norm)
    new = dict(params=params, buffers=buffers, opt_state=opt_state, d_params=d_params, d_buffers=new_d_buffers,
               d_opt_state=d_opt_state, queue=queue)
    new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, {k: getattr(state, k) for k in new})
    metrics = {"loss": loss, **logs, "d_loss": loss_d, **d_logs, "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.float32)}
    return state.replace(step=state.step + 1, rng=rng, nonfinite=jnp.where(ok, 0, state.nonfinite + 1), **new), metrics


# ------------------------------------------------------------------------------------------------- the kind


class CycleGAN(SR):
    """G_A, G_B, D_A, D_B on two unaligned domains; see the module docstring and `jaxsr.train.kind.Kind`."""

    carryable = ("opt_state", "d_opt_state")
    resolve_config = staticmethod(resolve_config)

    @staticmethod
    def check(cfg):
        check_cyclegan(cfg)
        optim.build_optimizer(cfg.optim, cfg.train.total_steps)
        optim.build_optimizer(cfg.optim_d, cfg.train.total_steps)
        evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        unaligned.list_domains(cfg.data.train_dir, "train", "data.train_dir")
        if cfg.data.val_dir:
            unaligned.list_domains(cfg.data.val_dir, "test", "data.val_dir")

    def __init__(self, cfg, workdir, mesh, meta=None):
        self.p = check_cyclegan(cfg)
        self.cfg = cfg
        try:
            tx = optim.build_optimizer(cfg.optim, cfg.train.total_steps)
            tx_d = optim.build_optimizer(cfg.optim_d, cfg.train.total_steps)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.perceptual = evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        nets, self.specs = build_nets(cfg, meta.get("spec") if meta else None)
        self.spec = self.specs["G_A"]
        self.meta = {"spec": self.spec}
        self.data = self._data(cfg)
        if not self.data.val and (cfg.val.every or cfg.val.at_start):
            raise ConfigError("no validation images: give data.val_dir (testA/ and testB/, or A/ and B/), or set val.every=0 "
                              "and val.at_start=False")
        for m in nets.values():
            m.train()
        self.eval_defs = {}
        for n in ("G_A", "G_B"):
            e = nnx.clone(nets[n])
            e.eval()
            self.eval_defs[n] = state_lib.split(e)[0]
        split = {n: state_lib.split(m) for n, m in nets.items()}
        params = {n: split[n][1] for n in ("G_A", "G_B")}
        d_params = {n: split[n][1] for n in ("D_A", "D_B")}
        s, size = cfg.cyclegan, self._sample_size()  # a pool needs one (check_cyclegan)
        queue = pool_init(int(s.pool_size), (size, size, int(self.specs["G_B"]["out_ch"])),
                          (size, size, int(self.specs["G_A"]["out_ch"]))) if int(s.pool_size) else None
        state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                     buffers={n: split[n][2] for n in ("G_A", "G_B")}, opt_state=tx.init(params), ema=None,
                                     rng=jax.random.PRNGKey(cfg.seed), nonfinite=jnp.zeros((), jnp.int32),
                                     d_params=d_params, d_buffers={n: split[n][2] for n in ("D_A", "D_B")},
                                     d_opt_state=tx_d.init(d_params), queue=queue)
        self.state = parallel.replicate(mesh, state)
        self.parts = Parts({n: split[n][0] for n in ("G_A", "G_B")}, {n: split[n][0] for n in ("D_A", "D_B")}, tx, tx_d,
                           float(s.lambda_A), float(s.lambda_B), float(s.lambda_identity), s.gan_mode,
                           tuple(getattr(nets["G_A"], "value_range", (0.0, 1.0))))
        total, repl = cfg.train.total_steps, parallel.replicated(mesh)

        def step(state, batch):
            new, metrics = train_step(self.parts, state, batch)
            return new, {**metrics, "lr": optim.current_lr(cfg.optim, total, state.opt_state),
                         "lr_d": optim.current_lr(cfg.optim_d, total, state.d_opt_state)}

        self.step = jax.jit(step, donate_argnums=(0,), out_shardings=(repl,) * 2)
        self._feed_plateau = None

    def _sample_size(self):
        """The side of every training sample (None where the preprocess leaves sizes free; then no pool)."""
        p = self.p
        if "crop" in p.steps:
            return p.crop_size
        if "resize" in p.steps:
            return p.load_size
        return p.center_crop_size if "center_crop" in p.steps else None

    def _data(self, cfg):
        d, s = cfg.data, cfg.cyclegan
        a, b = unaligned.list_domains(d.train_dir, "train", "data.train_dir", s.direction)
        it = unaligned.train_iterator(a, b, self.p, s.serial, cfg.seed, host_batch_size(cfg.train.batch_size),
                                      jax.process_index(), jax.process_count(), d.alpha, d.num_workers, d.read_threads,
                                      d.prefetch)
        val = None
        if d.val_dir:
            va, vb = unaligned.list_domains(d.val_dir, "test", "data.val_dir", s.direction)
            val = {"A": unaligned.val_items(va, self.p, d.alpha, d.val_max_images),
                   "B": unaligned.val_items(vb, self.p, d.alpha, d.val_max_images)}
        return Data({"train": a, "train_B": b}, it, val)

    def summary(self, state):
        n = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in {**state.params, **state.d_params}.items()}
        s = self.cfg.cyclegan
        return (f"cyclegan {self.spec['arch']}: G_A {n['G_A']:,} and G_B {n['G_B']:,} parameters, PatchGANs D_A {n['D_A']:,} "
                f"and D_B {n['D_B']:,}; gan_mode {s.gan_mode}, lambda_A {s.lambda_A}, lambda_B {s.lambda_B}, "
                f"lambda_identity {s.lambda_identity}, pool {s.pool_size}")

    def train_step(self, state, batch, step):
        return self.step(state, batch)

    def inspect_step(self, state, batch, step):
        raise ConfigError("kind='cyclegan' logs no per-layer statistics: set log.gradients=0 and log.parameters=0")

    def deployable(self, state):
        """{G_A, G_B}: the eval-mode generators."""
        params, buffers = parallel.to_host(state.params), parallel.to_host(state.buffers)
        return {n: nnx.merge(self.eval_defs[n], params[n], buffers[n]) for n in ("G_A", "G_B")}

    def validate(self, models, split="val"):
        """The cycle reconstructions' PSNR/SSIM (RGB, no border cropped): G_B(G_A(A)) against A and G_A(G_B(B)) against
        B; psnr/ssim are their means, psnr_A / psnr_B each's. Rows: A, G_A(A), G_B(G_A(A)) and B, G_B(B), G_A(G_B(B))."""
        scores, shown = {"A": [], "B": []}, []
        for side, there, back in (("A", "G_A", "G_B"), ("B", "G_B", "G_A")):
            for item in self.data.val[side]:
                fake = upscale(models[there], item["img"])
                rec = upscale(models[back], fake)
                scores[side].append(evaluate.score({"rec": rec}, item["img"], 0, y_channel=False,
                                                   perceptual=self.perceptual)["rec"])
                if len(shown) < 4:
                    shown.append((item["img"], quantize(fake), quantize(rec)))
        values = {}
        for k in ("psnr", "ssim", *self.perceptual):
            for side in ("A", "B"):
                values[f"{k}_{side}"] = mean_over_images([s[k] for s in scores[side]])
            values[k] = 0.5 * (values[f"{k}_A"] + values[f"{k}_B"])
        line = (f"cycle PSNR {values['psnr']:.3f} dB (A {values['psnr_A']:.3f}, B {values['psnr_B']:.3f}), SSIM "
                f"{values['ssim']:.4f} on {len(scores['A'])} + {len(scores['B'])} image(s)")
        return Scores(values, line, shown)

    def export(self, models, base):
        """base_G_A / base_G_B .pth (junyanz's layout) and .safetensors (and .onnx with export.onnx)."""
        for n, model in models.items():
            for ext in (".pth", ".safetensors"):
                weights.export(model, self.specs[n], f"{base}_{n}{ext}")
            if self.cfg.export.onnx:
                from jaxsr.deploy import export_onnx

                done = export_onnx(model, self.specs[n], f"{base}_{n}.onnx", fp16=self.cfg.export.onnx_fp16)
                log.info(f"{os.path.basename(base)}_{n}.onnx: {done.verification.line()}")

    def mirror(self, models, base, info):
        """Both generators' .safetensors; G_A's path (the one init_weights / load_model take)."""
        for n, model in models.items():
            weights.export(model, self.specs[n], f"{base}_{n}.safetensors", info)
        return f"{base}_G_A.safetensors"

    def log_images(self, state, batch, step, board):
        """The batch's A | G_A(A) | B and B | G_B(B) | A rows (eval-mode generators; A and B are unaligned)."""
        models = self.deployable(state)
        a, b = parallel.to_host(batch["a"][:4]), parallel.to_host(batch["b"][:4])
        lo, hi = self.parts.value_range
        fb = (models["G_A"](to_range(self.parts, a)) - lo) / (hi - lo)
        fa = (models["G_B"](to_range(self.parts, b)) - lo) / (hi - lo)
        board.images(step, "train/a_fakeb_b", a, fb, b)
        board.images(step, "train/b_fakea_a", b, fa, a)


__all__ = ["CycleGAN", "NETS", "check_cyclegan", "default_config", "pool_init", "pool_query", "train_step"]
