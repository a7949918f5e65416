"""The seeds' workflow (issue: the seeds' remaining workflow): defaults that follow the optimizer chosen, refusals
that --print_config meets too, device choice, TensorBoard off."""
import json
import os

import pytest

from conftest import cli
from jaxsr import hostmem

pytestmark = pytest.mark.usefixtures("quick_compiles")  # tiny runs: XLA compiles more than it runs

TINY = ["run_train.py", "--config", "configs/demo.py", "--config.model.num_feat=8", "--config.model.num_block=1",
        "--config.train.batch_size=4", "--config.data.gt_size=32", "--config.degrade.gt_size=32",
        "--config.train.total_steps=2", "--config.train.log_every=1", "--config.val.every=0",
        "--config.val.at_start=False", "--config.optim.warmup_steps=1", "--config.data.val_max_size=96"]


def test_adan_chosen_alone_takes_adans_betas_and_print_config_shows_them():
    for name in ("adan", "adan_schedule_free"):
        more = ["--config.optim.schedule=constant"] if "schedule_free" in name else []
        code, out, err = cli(*TINY, f"--config.optim.name={name}", *more, "--print_config")
        assert code == 0, err
        assert json.loads(out)["optim"]["betas"] == [0.98, 0.92, 0.99]
    code, out, err = cli(*TINY, "--config.optim.name=adan", "--config.optim.betas=(0.9,0.99,0.999)", "--print_config")
    assert code == 0 and json.loads(out)["optim"]["betas"] == [0.9, 0.99, 0.999], err  # the user's own are kept
    code, out, err = cli(*TINY, "--print_config")
    assert code == 0 and json.loads(out)["optim"]["betas"] == [0.9, 0.99], err


@pytest.mark.parametrize("overrides,message", [
    (["--config.optim.name=adan", "--config.optim.betas=(0.9,0.99,0.9,0.9)"], "optim.betas must have 3 values for adan"),
    (["--config.optim.name=adan_schedule_free"], "adan_schedule_free is schedule-free: set optim.schedule='constant'"),
    (["--config.optim.schedule=cosine_restart", "--config.optim.restart_weights=(1.0,)"],
     "optim.restart_weights is for multistep_restart/step_restart"),
    (["--config.optim.warmup=square"], "optim.warmup must be 'linear' or 'cosine'"),
])
def test_what_building_the_optimizers_refuses_print_config_refuses_too(tmp_path, overrides, message):
    code, out, err = cli(*TINY, *overrides, "--print_config")
    assert code == 2 and not out and err.splitlines() == [err.splitlines()[0]] and message in err, err
    code, out, err = cli(*TINY, *overrides, "--workdir", tmp_path / "wd")
    assert code == 2 and message in err, err


def test_platform_cpu_on_one_device_without_tensorboard(tmp_path):
    wd = tmp_path / "wd"
    code, out, err = cli(*TINY, "--platform", "cpu", "--devices", "1", "--config.log.tensorboard=False", "--workdir", wd)
    assert code == 0 and ", 1 device(s), global batch 4" in out, err
    xla_cpu = [line.split("XLA:CPU: ", 1)[1] for line in out.splitlines() if "XLA:CPU: " in line]
    assert xla_cpu == ["the train state updated in place (copy insertion's region analysis: no copy of the optimizer "
                       "state each step)"], out  # --devices: no device count chosen
    assert not os.path.exists(wd / "tensorboard") and len(open(wd / "metrics.jsonl").readlines()) == 2
    code, out, err = cli(*TINY, "--workdir", tmp_path / "two")  # by default, one XLA:CPU device per core
    cores = len(os.sched_getaffinity(0))
    n = max(d for d in (1, 2, 4) if d <= cores)  # the largest divisor of the batch (4) up to the cores
    assert code == 0 and f", {n} device(s)" in out and os.listdir(tmp_path / "two" / "tensorboard"), err
    assert f"; {n} device(s) for {cores} core(s), the batch of 4 split over them" in out, out
    assert (hostmem.LOG_LINE in out) == (hostmem.huge_pages_env({}) is not None), out  # where it changes something
    for flags_, message in ((["--platform", "tpu"], "--platform tpu: JAX cannot start it here"),
                            (["--platform", "xpu"], "--platform must be one of cpu, gpu, tpu, got 'xpu'"),
                            (["--devices", "3"], "train.batch_size (4) must be a multiple of the device count (3)")):
        code, out, err = cli(*TINY, *flags_, "--workdir", tmp_path / "refused")
        assert code == 2 and err.splitlines() == [f"error: {err.split('error: ', 1)[1].strip()}"] and message in err, err


YAML = """# the TINY run, as a YAML overlay on the demo recipe: only what changes
base: demo
name: overlay
model: {num_feat: 8, num_block: 1}
data: {gt_size: 32, val_max_size: 96}
degrade: {gt_size: 32}
train:
  batch_size: 4
  total_steps: 4
  log_every: 1
val: {every: 0, at_start: false}
optim:
  warmup_steps: 1
"""


def test_overlays_train_and_a_workdir_reruns_itself_with_its_history(tmp_path):
    (tmp_path / "tiny.yaml").write_text(YAML)
    wd = tmp_path / "wd"
    code, out, err = cli("run_train.py", "--config", tmp_path / "tiny.yaml", "--config.optim.lr=1e-3", "--max_steps", "2",
                         "--workdir", wd)
    assert code == 0 and "stopped at step 2" in out, err
    code, out, err = cli("run_train.py", "--workdir", wd, "--max_steps", "4")  # no --config: the workdir's
    assert code == 0 and "resumed from step 2" in out and "config changed since the last start (allowed): train.stop_at" \
        in out, out + err
    rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and max(r["lr"] for r in rows) == pytest.approx(1e-3)  # the override stayed
    saved = json.load(open(wd / "config.json"))
    assert saved["name"] == "overlay" and saved["optim"]["lr"] == 1e-3 and saved["model"]["num_feat"] == 8
    assert [(h["step"], h["changed"]) for h in saved["history"]] == [(0, {}), (2, {"train.stop_at": [2, 4]})]
    code, out, err = cli("run_train.py", "--workdir", wd)  # as its last start was configured: nothing left to train
    assert code == 0 and "nothing to train: the checkpoint is at step 4" in out, out + err
    assert len(json.load(open(wd / "config.json"))["history"]) == 2  # a plain resume changes nothing

    # a JSON overlay whose base is the YAML file (a path relative to it), on the command line with an override
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.json").write_text(json.dumps({"base": "../tiny.yaml", "name": "json", "train": {"total_steps": 2}}))
    code, out, err = cli("run_train.py", "--config", tmp_path / "sub" / "more.json", "--workdir", tmp_path / "j")
    assert code == 0 and "done: 2 steps" in out, out + err
    assert os.path.exists(tmp_path / "j" / "models" / "json_x4.safetensors")


def test_init_weights_with_resume_from_is_one_line_and_no_workdir_no_config_is_refused(tmp_path):
    code, out, err = cli(*TINY, "--config.init_weights=m.pth", "--resume_from", "2", "--workdir", tmp_path / "wd")
    assert code != 0 and not out and err.strip().splitlines() == [
        "error: --config.init_weights starts a run from weights, --resume_from continues one from its checkpoint: give "
        "one of them (a warm start goes in a new --workdir)"], err
    code, out, err = cli("run_train.py", "--workdir", tmp_path / "empty")
    assert code != 0 and err.strip() == f"error: --workdir {tmp_path / 'empty'} holds no run (no config.json): give " \
        "--config to start one there", err
    assert not os.path.exists(tmp_path / "wd") and not os.path.exists(tmp_path / "empty")


REFUSED = [  # (override, the start-time refusal): each also refused by --print_config, before any work
    ("losses.l1.name=l3", "unknown loss 'l3'"),
    ("losses.l1.name=perceptual", "the perceptual loss needs VGG19 weights"),
    ("losses.l1.name=gan", "losses has a 'gan' term but gan.enabled is False"),
    ("losses.l1.target=gtx", "loss 'l1': target must be 'gt' or 'gt_usm', got 'gtx'"),
    ("gan.enabled=True", "gan.enabled is True but losses has no 'gan' term"),
    ("degrade.mode=foo", "degrade.mode must be one of realesrgan, bicubic, mono, got 'foo'"),
    ("data.hr_dir=/nonexistent", "data.hr_dir: folder '/nonexistent' does not exist"),
    ("data.alpha=foo", "data.alpha must be 'drop' or 'composite', not 'foo'"),
    ("data.num_workers=-1", "data.num_workers must be >= 0, got -1"),
    ("val.lpips=('a.pth','b.pth')", "LPIPS weights file 'a.pth' not found"),
    ("compute_dtype=fp8", "compute_dtype must be 'auto', 'float32', 'bfloat16' or 'float16'"),
    ("optim.warmup=square", "optim.warmup must be 'linear' or 'cosine'"),
    ("val.test_every=-1", "val.test_every must be >= 0, got -1"),
    ("log.gradients=-1", "log.gradients must be >= 0, got -1"),
    ("val.extra=('/data/set5',)", "val.extra must map names to validation folders"),
    ("val.extra=(dict(test='/data/set5'))", "val.extra: 'test' cannot name a validation set"),
    ("val.extra=(dict(set5='/nonexistent'))", "val.extra.set5: folder '/nonexistent' does not exist"),
]


def test_every_start_refusal_of_the_corpus_is_a_print_config_refusal(tmp_path):
    """In process, as run_train does it: the config (`cmdline.resolved_config`'s steps), then `--print_config`'s check,
    or the start of the run."""
    import importlib

    from jaxsr.errors import JaxsrError
    from jaxsr.train import kinds, loop
    from jaxsr.train.config import resolve

    base = importlib.import_module("configs.demo").get_config()
    for a in TINY[3:]:
        field, value = a[len("--config."):].split("=")
        node = base
        *parents, leaf = field.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value == "True"

    def configured(override):
        cfg = resolve(base)
        field, value = override.split("=", 1)
        *parents, leaf = field.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = {"True": True, "-1": -1}.get(value, eval(value) if value.startswith("(") else value)
        cfg = resolve(cfg)
        return kinds.get(cfg.kind).resolve_config(cfg, None), kinds.get(cfg.kind)

    for override, message in REFUSED:
        for way in ("print_config", "start"):
            wd = tmp_path / f"{override.split('=')[0]}-{way}"
            with pytest.raises(JaxsrError) as e:
                cfg, kind = configured(override)
                kind.check(cfg) if way == "print_config" else loop.start(cfg, str(wd))
            assert message in str(e.value), (override, way, str(e.value))
            made = [str(p.relative_to(wd)) for p in wd.rglob("*")] if wd.exists() else []
            assert made == [] if way == "print_config" else set(made) <= {"train.log", "checkpoints"}, made


def test_deploy_mirrors_follow_the_checkpoints_and_warm_start_infer_convert_and_open_in_spandrel(tmp_path, spandrel):
    import re

    from safetensors import safe_open
    from safetensors.numpy import load_file

    from conftest import photo
    from jaxsr.imageio import write_image

    wd = tmp_path / "wd"
    code, out, err = cli(*TINY, "--config.train.total_steps=6", "--config.train.ckpt_every=1", "--config.val.every=3",
                         "--config.train.keep_best=2", "--workdir", wd)
    assert code == 0, err
    kept = sorted(int(s) for s in os.listdir(wd / "checkpoints"))
    mirrors = sorted(os.listdir(wd / "deploy"))
    assert mirrors == [f"demo_x4_step{s}.safetensors" for s in kept] and 6 in kept and len(kept) == 3, (kept, mirrors)
    last = str(wd / "deploy" / "demo_x4_step6.safetensors")
    info = json.loads(safe_open(last, "np").metadata()["jaxsr_info"])
    val = {r["step"]: r["val_psnr"] for r in map(json.loads, open(wd / "metrics.jsonl")) if "val_psnr" in r}
    assert info["step"] == 6 and info["metrics"]["psnr"] == val[6]
    export = load_file(wd / "models" / "demo_x4.safetensors")  # the run's last export: its EMA weights at step 6
    assert all((v == export[k]).all() for k, v in load_file(last).items()) and export.keys() == load_file(last).keys()
    desc = spandrel.ModelLoader().load_from_file(last)
    assert (desc.architecture.id, desc.scale) == ("ESRGAN", 4)

    # a new run warm-starts from it: its step-0 validation is the mirror's score
    code, out, err = cli(*TINY, f"--config.init_weights={last}", "--workdir", tmp_path / "warm")
    assert code == 0, err
    assert float(re.search(r"validation at step 0: PSNR ([\d.]+) dB", out)[1]) == pytest.approx(val[6], abs=1e-3), out
    write_image(tmp_path / "in.png", photo("chelsea", 40, 48))
    code, out, err = cli("-m", "jaxsr.infer", "--weights", last, "--input", tmp_path / "in.png", "--output", tmp_path / "sr")
    assert code == 0 and os.listdir(tmp_path / "sr"), err
    code, out, err = cli("-m", "convert.to_pth", last, tmp_path / "m.pth")
    assert code == 0 and spandrel.ModelLoader().load_from_file(str(tmp_path / "m.pth")).scale == 4, err

    # a branch moves the later checkpoints' mirrors aside with them
    code, out, err = cli(*TINY, "--config.train.total_steps=6", "--config.train.ckpt_every=1", "--config.val.every=3",
                         "--config.train.keep_best=2", "--workdir", wd, "--resume_from", str(kept[-2]), "--max_steps",
                         str(kept[-2]))
    assert code == 0, err
    assert sorted(os.listdir(wd / "deploy")) == [m for m in mirrors if int(m[len("demo_x4_step"):-12]) <= kept[-2]]
    (aside,) = os.listdir(wd / "branched")
    assert os.listdir(wd / "branched" / aside / "deploy") == ["demo_x4_step6.safetensors"]
