"""Shared by the benchmarks: timing (warm up, then median wall time over repeats), tables, inputs and configs."""
import statistics
import time


def timeit(fn, *, warmup=2, repeats=5, sync=lambda out: None):
    """Median seconds of fn() over `repeats` runs after `warmup` runs; `sync` waits for async results."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def table(rows, headers):
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(v).rjust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def photos(n, size):
    """n real photographs cropped to size x size (conftest.photo; tests/ must be on sys.path); a photograph's repeats
    are shifted crops (chelsea, the smallest, is 300 px high: fits 256 px crops up to 2 repeats)."""
    import numpy as np
    from conftest import photo

    names = ("astronaut", "coffee", "chelsea", "rocket")
    return np.stack([photo(names[i % 4], size, size, top=16 * (i // 4), left=24 * (i // 4)) for i in range(n)])


def config(model, batch, lr_size, degrade, gan=False, vgg=None):
    """The trainer config the train-step benchmarks run: 'rrdb' (64/23/32) or 'dat2' (remat), x4, Adam."""
    from jaxsr.train.config import base_config

    c = base_config()
    if model == "dat2":
        from ml_collections import ConfigDict

        c.model = ConfigDict(dict(arch="dat", variant="dat_2", use_chk=True))
    c.compute_dtype = "auto"
    c.degrade.mode = "realesrgan" if degrade else "bicubic"
    c.degrade.gt_size = lr_size * 4
    c.degrade.queue_size = 0
    c.optim.update(name="adam", lr=1e-4)
    c.train.update(batch_size=batch, total_steps=1000)
    if gan:
        c.losses = {"l1": dict(name="l1", target="gt_usm"), "perceptual": dict(name="perceptual", vgg_weights=vgg, target="gt_usm"),
                    "gan": dict(name="gan", weight=0.1)}
        c.gan.enabled = True
    return c


def train_step(cfg, mesh):
    """The trainer's own jitted step for `cfg` from its builders: (state, step, feature_params); call as
    step(state, batch, feature_params) -> (state, metrics). The GAN step where cfg enables one."""
    from jaxsr import parallel
    from jaxsr.train.kinds import sr
    from jaxsr.train.state import split

    objective = sr.build_objective(cfg)
    tx, tx_d = sr.build_optimizers(cfg)
    model, spec = sr.build_generator(cfg)
    disc = sr.build_discriminator(cfg, spec)
    model.train()
    g_def = split(model)[0]
    steps = sr.build_steps(cfg, mesh, objective, tx, g_def, g_def, split(disc)[0] if disc else None, tx_d)
    state = parallel.replicate(mesh, sr.build_state(cfg, model, tx, disc, tx_d))
    return state, steps.gan or steps.g, parallel.replicate(mesh, objective.feature_params)
