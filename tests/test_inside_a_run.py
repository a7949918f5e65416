"""Seeing inside a run (issue 32): per-layer norms from the jitted step on their steps only, the system scalars and the
data-loader wait, a profile of asked steps, the test split and extra validation sets on their cadences (never best-k),
monochrome validated in monochrome, and Weights & Biases offline holding every logged key across a resume.

Runs are in-process with a tiny RRDB on 32 px crops of the built-in photographs; one run (`observed`) serves several
tests."""
import gzip
import importlib
import importlib.util
import json
import os
import struct
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import photo

from jaxsr import degrade, parallel
from jaxsr.degrade import ops
from jaxsr.imageio import write_image
from jaxsr.train import loop
from jaxsr.train.config import resolve
from jaxsr.train.kinds.sr import SR
from jaxsr.train.logger import Board

THROTTLE = 0.3  # s the throttled loader sleeps before each batch


def tiny(**fields):
    """The demo recipe at test size, with `fields` ('section.key': value) over it."""
    cfg = importlib.import_module("configs.demo").get_config()
    cfg.model.update(num_feat=8, num_block=1, num_grow_ch=8)
    cfg.data.update(gt_size=32, num_workers=0, val_max_size=48)
    cfg.degrade.gt_size = 32
    cfg.train.update(batch_size=2, total_steps=4, log_every=2)
    cfg.optim.warmup_steps = 1
    cfg.val.update(every=0, at_start=False)
    for field, value in fields.items():
        *section, key = field.split(".")
        (cfg[section[0]] if section else cfg)[key] = value
    return resolve(cfg)


def rows(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


class Batches:
    """The training batches of a run, replayed from memory (no waiting), sleeping THROTTLE s before each from batch
    `slow_from` on: a loader that cannot keep up."""

    def __init__(self, inner, slow_from):
        self.inner, self.slow_from, self.drawn, self.first = inner, slow_from, 0, next(inner)

    def __next__(self):
        self.drawn += 1
        if self.drawn > self.slow_from:
            time.sleep(THROTTLE)
        return self.first

    def __getattr__(self, name):  # get_state, set_state, close
        return getattr(self.inner, name)


def spy_board(monkeypatch):
    """{kind: set of keys} that the Board was given (scalars, images, histograms): what TensorBoard and W&B get."""
    seen = {"scalars": set(), "images": set(), "histograms": set(), "system": []}
    scalars, images, histogram = Board.scalars, Board.images, Board.histogram

    def spy_scalars(self, step, values, prefix="train/"):
        seen["scalars"].update(prefix + k for k in values)
        if prefix == "system/":
            seen["system"].append((step, dict(values)))
        return scalars(self, step, values, prefix)

    monkeypatch.setattr(Board, "scalars", spy_scalars)
    monkeypatch.setattr(Board, "images", lambda self, step, tag, *a: (seen["images"].add(tag), images(self, step, tag, *a)))
    monkeypatch.setattr(Board, "histogram", lambda self, step, tag, v: (seen["histograms"].add(tag), histogram(self, step, tag, v)))
    return seen


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """A 4-step run, then its rerun (which resumes at step 4 with nothing to train): W&B offline, the test split every 3 steps, an extra validation set, a
    profile of step 3, training images and per-layer histograms, a loader throttled from batch 3 on; logged every 2.
    Without the wandb package, the same without W&B."""
    tmp = tmp_path_factory.mktemp("observed")
    extra = tmp / "extra"
    extra.mkdir()
    write_image(str(extra / "rocket.png"), photo("rocket", 64, 64, top=100, left=200))
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_DIR", str(tmp))
    mp.setenv("WANDB_SILENT", "true")
    seen = spy_board(mp)
    fields = {"val.every": 2, "val.test_every": 3, "val.extra": {"rocket": str(extra)}, "log.parameters": 4, "log.histograms": True, "train.image_every": 2,
              "log.wandb": importlib.util.find_spec("wandb") is not None}
    wd = str(tmp / "wd")
    try:
        run = loop.start(tiny(**fields), wd, profile=(3, 3))
        run.kind.data.train = Batches(run.kind.data.train, slow_from=2)
        calls = []
        for name in ("g", "g_inspect"):
            fn = getattr(run.kind.steps, name)
            setattr(run.kind.steps, name, lambda *a, _fn=fn, _name=name: (calls.append(_name), _fn(*a))[1])
        assert run.run() == 4
        first = (run, [dict(r) for r in rows(wd)])
        again = loop.start(tiny(**fields), wd)  # a rerun: nothing to train, but it opens its logs again
        assert again.run() == 4
    finally:
        mp.undo()
    return dict(workdir=wd, first=first, seen=seen, calls=calls)


def test_per_layer_rows_come_from_the_inspecting_step_on_their_steps_only(observed):
    assert observed["calls"] == ["g", "g", "g", "g_inspect"]  # log.parameters=4: step 4 alone
    got = observed["first"][1]
    assert [r["step"] for r in got if "param_norm/G/conv_first" in r] == [4]
    assert not [k for r in got for k in r if k.startswith(("grad_norm/", "update_ratio/"))]  # log.gradients=0


def test_the_data_wait_rises_when_the_loader_is_throttled(observed):
    system = dict(s for s in observed["seen"]["system"] if s[0] <= 4)
    fast, slow = system[2]["data_wait_ms"], system[4]["data_wait_ms"]  # batches 1-2 in memory, 3-4 after a sleep each
    assert slow > 0.8 * THROTTLE * 1000 and fast < 0.2 * THROTTLE * 1000, (fast, slow)
    assert {"host_cpu_percent", "host_rss_gib", "host_ram_percent"} <= set(system[2])
    if jax.local_devices()[0].memory_stats() is None:  # XLA:CPU: no device memory, and the log says so once
        assert "device_mem_gib" not in system[2]
        log = open(os.path.join(observed["workdir"], "train.log")).read()
        assert log.count("backend reports no device memory") == 1  # once (the rerun trains nothing)


def test_the_host_numbers_read_from_proc_without_psutil(monkeypatch):
    psutil = pytest.importorskip("psutil")
    from jaxsr.train import logger

    with_psutil, total_psutil = (logger._rss_bytes(), logger._host_ram_bytes()), psutil.virtual_memory().total
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    rss, (used, total) = logger._rss_bytes(), logger._host_ram_bytes()
    assert total == total_psutil
    assert abs(rss - with_psutil[0]) < 0.2 * rss and abs(used - with_psutil[1][0]) < 0.1 * total


def test_a_profile_holds_the_asked_steps(observed):
    traces = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(observed["workdir"], "profile")) for f in fs]
    assert any(f.endswith(".xplane.pb") for f in traces)  # what TensorBoard's Profile tab opens
    (perfetto,) = [f for f in traces if f.endswith(".trace.json.gz")]
    events = json.load(gzip.open(perfetto))["traceEvents"]
    steps = {int(e["args"]["step_num"]) for e in events if e.get("name") == "train" and "step_num" in e.get("args", {})}
    assert steps == {3}
    log = open(os.path.join(observed["workdir"], "train.log")).read()
    assert f"profile of steps 3-3 written to {observed['workdir']}/profile" in log and "ui.perfetto.dev" in log


def test_test_split_and_extra_sets_are_scored_on_their_cadences_and_never_pick_the_best(observed):
    run, got = observed["first"]
    at = lambda key: [r["step"] for r in got if key in r]  # noqa: E731
    assert at("val_psnr") == [2, 4] and at("rocket_psnr") == [2, 4] and at("test_psnr") == [3, 4]  # 4: the end
    assert {k for r in got for k in r if k.startswith(("test_", "rocket_"))} == {"test_psnr", "test_ssim", "rocket_psnr",
                                                                                   "rocket_ssim"}
    best_val = max(r["val_psnr"] for r in got if "val_psnr" in r)
    assert run.best == best_val  # best-k and the _best exports follow validation only
    assert best_val not in [r[k] for r in got for k in ("test_psnr", "rocket_psnr") if k in r]


def _wandb_records(path):
    """The records of a .wandb file: wandb's leveldb-style log (a 7-byte header, 32 KiB blocks of chunks with a 7-byte
    header: crc32, length, type), each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    data, out, pending = open(path, "rb").read(), [], b""
    assert data[:4] == b":W&B"
    pos, block = 7, 32768
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        if kind == 0:  # zero padding at the end of the file
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def test_weights_and_biases_offline_holds_every_key_and_a_resume_continues_the_run(observed):
    pytest.importorskip("wandb")
    runs = sorted(d for d in os.listdir(os.path.join(observed["workdir"], "wandb")) if d.startswith("offline-run-"))
    assert len(runs) == 2  # the first start and the resume
    run_id = open(os.path.join(observed["workdir"], "wandb_run_id")).read().strip()
    assert all(d.endswith("-" + run_id) for d in runs)  # the same run
    keys = set()
    for d in runs:
        folder = os.path.join(observed["workdir"], "wandb", d)
        (f,) = [x for x in os.listdir(folder) if x.endswith(".wandb")]
        for r in _wandb_records(os.path.join(folder, f)):
            if r.WhichOneof("record_type") == "run":
                assert r.run.run_id == run_id
            if r.WhichOneof("record_type") == "history":
                keys.update(item.key or item.nested_key[0] for item in r.history.item)  # [key, 'bins'] ...
    seen = observed["seen"]
    assert seen["images"] == {"train/lr_sr_hr", "val/lr_sr_hr"}
    assert {"train/sr", "param_hist/G/conv_first"} <= seen["histograms"]
    assert {"val/psnr", "test/psnr", "rocket/psnr", "train/loss", "system/data_wait_ms", "param_norm/G/conv_first"} <= seen["scalars"]
    missing = (seen["scalars"] | seen["images"] | seen["histograms"]) - keys
    assert not missing, sorted(missing)[:10]


def per_layer(tree):
    """{module path: all its values, float64}: the leaves of a parameter tree grouped by the path above their name."""
    out = {}
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
        out[".".join(keys[:-1])] = np.concatenate([out.get(".".join(keys[:-1]), []), np.asarray(x, np.float64).ravel()])
    return out


def test_per_layer_norms_equal_norms_of_the_same_gradients_and_other_steps_do_no_more(tmp_path):
    """GAN stage from step 0 with log.gradients, log.parameters and log.histograms: the inspecting step's per-layer
    norms (G's and D's) are those of the gradients it returns, computed here; together they make the global gradient
    norm of the update; the ratios and weight norms are those of the weights before and after the step. Every other step
    compiles to the very program of a run without per-layer logging."""
    gan = {"gan.enabled": True, "gan.start_step": 0, "gan.discriminator": {"arch": "unet", "num_feat": 8, "skip_connection": True},
           "losses": {"l1": {"name": "l1"}, "gan": {"name": "gan", "weight": 0.1}}, "train.total_steps": 2}
    mesh = parallel.make_mesh()
    plain = SR(tiny(**gan), str(tmp_path / "plain"), mesh)
    kind = SR(tiny(**gan, **{"log.gradients": 2, "log.parameters": 2, "log.histograms": True}), str(tmp_path / "wd"), mesh)
    batch = parallel.global_batch(mesh, next(kind.data.train))
    lowered = lambda k: k.steps.gan.lower(k.state, batch, k.feature_params).as_text()  # noqa: E731
    assert lowered(kind) == lowered(plain)  # other steps: the program of a run that logs no layers
    before = jax.tree.map(np.asarray, kind.state)
    after, metrics, layers = jax.tree.map(np.asarray, kind.inspect_step(kind.state, batch, 0))
    for tag, b, a in (("G", before.params, after.params), ("D", before.d_params, after.d_params)):
        b, a = per_layer(b), per_layer(a)
        assert {k.split("/", 2)[2] for k in layers if k.startswith(f"grad_norm/{tag}/")} == set(b)  # every layer
        for name in b:
            g = np.asarray(layers[f"grad_hist/{tag}/{name}"], np.float64)
            np.testing.assert_allclose(layers[f"grad_norm/{tag}/{name}"], np.linalg.norm(g), rtol=1e-5)
            np.testing.assert_allclose(layers[f"param_norm/{tag}/{name}"], np.linalg.norm(a[name]), rtol=1e-5)
            np.testing.assert_allclose(layers[f"param_hist/{tag}/{name}"], a[name], rtol=1e-6)
            ratio = np.linalg.norm(a[name] - b[name]) / np.linalg.norm(b[name])
            np.testing.assert_allclose(layers[f"update_ratio/{tag}/{name}"], ratio, rtol=1e-3, atol=1e-9)
            assert g.size == b[name].size
    total = np.sqrt(sum(v**2 for k, v in layers.items() if k.startswith("grad_norm/G/")))
    np.testing.assert_allclose(total, metrics["grad_norm"], rtol=1e-5)  # the gradients the update used


def test_mono_combines_with_a_mode_and_validates_in_gray_as_it_trains():
    cfg = degrade.default_config()
    cfg.update(mode="bicubic", gt_size=0)
    cfg.mono.update(enabled=True, noise_range=[0.0, 0.0], levels=16)
    hr = jnp.asarray(photo("astronaut", 64, 64, top=100, left=180))[None]
    out = jax.jit(lambda x: degrade.degrade(jax.random.PRNGKey(0), x, cfg, 4))(hr)
    colour = ops.quantize(ops.imresize(hr, 0.25))  # what mode 'bicubic' makes
    gray = 0.2989 * colour[..., :1] + 0.587 * colour[..., 1:2] + 0.114 * colour[..., 2:3]
    np.testing.assert_allclose(out["lq"], np.repeat(np.clip(np.round(gray * 15), 0, 15) / 15, 3, -1), atol=1e-6)  # bicubic, then mono
    assert np.allclose(out["gt"][..., 0], out["gt"][..., 1])  # the target is gray

    # validation: the same monochrome step, deterministic, against the gray target
    cfg.mono.noise_range = [0.0, 8.0]
    lr = np.asarray(colour[0])
    a, b = (degrade.mono_validation(np.asarray(hr[0]), lr, cfg, 4, seed=0, index=3) for _ in range(2))
    np.testing.assert_array_equal(a[0], b[0])
    assert np.ptp(a[0], axis=-1).max() == 0 and np.allclose(a[0] * 15, np.round(a[0] * 15), atol=1e-5)  # gray, 16 levels
    assert np.ptp(a[1], axis=-1).max() < 1e-6
    cfg.mode = "mono"  # mode 'mono' degrades the HR with its whole pipeline
    lq, gt = degrade.mono_validation(np.asarray(hr[0]), lr, cfg, 4, seed=0, index=3)
    assert lq.shape == (16, 16, 3) and np.allclose(lq * 15, np.round(lq * 15), atol=1e-5)


def test_a_tiny_mono_model_beats_bicubic_on_gray_held_out_photographs(tmp_path):
    """x2 from 4 gray levels: a small Compact (its nearest-upsampled skip starts it near the input) learns in 60 steps to
    undo the quantisation, which bicubic upscaling keeps (measured: 24.2 dB against 22.4 dB)."""
    mono = {**degrade.default_config().mono.to_dict(), "enabled": True, "levels": 4}
    cfg = tiny(**{"scale": 2, "model": {"arch": "compact", "num_feat": 16, "num_conv": 2}, "degrade.mono": mono,
                  "train.total_steps": 60, "train.log_every": 60, "val.every": 60, "train.batch_size": 4, "optim.lr": 5e-3,
                  "optim.ema_decay": 0.0})
    run = loop.start(cfg, str(tmp_path / "wd"))
    for item in run.kind.data.val:  # validation LR made as training makes it: gray, 4 levels; the target gray
        assert np.ptp(item["lr"], axis=-1).max() == 0 and np.allclose(item["lr"] * 3, np.round(item["lr"] * 3), atol=1e-5)
        assert np.ptp(item["hr"], axis=-1).max() < 1e-6
    run.run()
    (val,) = [r for r in rows(tmp_path / "wd") if "val_psnr" in r]
    assert val["val_psnr"] > run.kind.bicubic_psnr() + 0.5, (val, run.kind.bicubic_psnr())


def test_profile_steps_takes_a_step_range_or_says_what_it_takes():
    from jaxsr.train.cmdline import step_range

    assert step_range("3:5", "--profile_steps") == (3, 5) and step_range(None, "--profile_steps") is None
    for bad in ("3", "5:3", "0:2", "a:b"):
        with pytest.raises(SystemExit, match=r"error: --profile_steps takes A:B, the first and last step to trace"):
            step_range(bad, "--profile_steps")
