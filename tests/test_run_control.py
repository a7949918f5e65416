"""Run control through run_train.py: snapshots to roll back to, resuming from a chosen checkpoint, stopping without
changing the schedule, Ctrl-C, dry runs, and configs that reproduce a run."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

from conftest import interrupt, metric_rows

from jaxsr import load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config", "configs/demo.py", "--config.model.num_feat=8", "--config.model.num_block=1", "--config.model.num_grow_ch=8",
    "--config.train.batch_size=4", "--config.data.gt_size=32", "--config.degrade.gt_size=32", "--config.data.num_workers=0",
    "--config.train.total_steps=12", "--config.train.log_every=1", "--config.train.ckpt_every=100", "--config.val.every=0",
    "--config.val.at_start=False", "--config.optim.warmup_steps=2", "--config.data.val_max_size=96",
]


def run(*args, timeout=600):
    r = subprocess.run([sys.executable, "run_train.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout, r.stderr



@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """A 12-step cosine run keeping a snapshot every 4 steps; its metrics are the reference of the tests below."""
    wd = tmp_path_factory.mktemp("snap") / "wd"
    code, _, err = run(*TINY, "--config.train.snapshot_every=4", "--workdir", wd)
    assert code == 0, err
    return wd, metric_rows(wd)


def test_snapshots_are_kept_and_exported_and_a_run_branches_from_one_bitwise(snapshots, tmp_path):
    src, first = snapshots
    wd = tmp_path / "wd"
    subprocess.run(["cp", "-r", str(src), str(wd)], check=True)
    assert sorted(os.listdir(wd / "checkpoints"), key=int) == ["4", "8", "12"]
    for step in (4, 8, 12):
        model, info = load_model(wd / "models" / f"demo_x4_step{step}.safetensors")
        assert (info["arch"], info["scale"]) == ("esrgan", 4)
        assert (wd / "models" / f"demo_x4_step{step}.pth").exists()
    code, out, err = run(*TINY, "--config.train.snapshot_every=4", "--workdir", wd, "--resume_from", "4")
    assert code == 0, err
    assert "branching at step 4: 2 later checkpoint(s)" in out and "resumed from step 4" in out
    again = metric_rows(wd)
    assert sorted(again) == list(range(1, 13)) and all(again[s] == first[s] for s in range(5, 13))  # bitwise
    (aside,) = os.listdir(wd / "branched")
    assert sorted(os.listdir(wd / "branched" / aside / "checkpoints"), key=int) == ["8", "12"]  # moved, not deleted
    assert "demo_x4_step12.pth" in os.listdir(wd / "branched" / aside / "models")
    assert any('"branched_at": 4' in line for line in open(wd / "metrics.jsonl"))
    assert "branching at step 4" in (wd / "train.log").read_text()


def test_stop_at_keeps_the_schedule_and_a_frozen_config_reruns_the_run(snapshots, tmp_path):
    src, first = snapshots
    code, out, err = run(*TINY, "--max_steps", "5", "--workdir", tmp_path / "stopped")
    assert code == 0 and "stopped at step 5 (train.stop_at)" in out, err
    got = metric_rows(tmp_path / "stopped")
    assert sorted(got) == [1, 2, 3, 4, 5] and all(got[s] == first[s] for s in got)  # the same lr (cosine to 12), bitwise
    # the frozen config.json of a run reproduces it in a new workdir
    code, _, err = run("--config", src / "config.json", "--config.train.stop_at=3", "--workdir", tmp_path / "rerun")
    assert code == 0, err
    got = metric_rows(tmp_path / "rerun")
    assert sorted(got) == [1, 2, 3] and all(got[s] == first[s] for s in got)


def test_print_config_shows_the_architecture_taken_from_init_weights(snapshots):
    src, _ = snapshots
    r = subprocess.run([sys.executable, "run_train.py", "--config", "configs/x4.py", "--config.model.arch=auto",
                        f"--config.init_weights={src / 'models' / 'demo_x4.safetensors'}", "--print_config"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["model"] == {"arch": "esrgan", "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 8}


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_ctrl_c_saves_where_it_stopped_and_the_rerun_resumes_there(tmp_path):
    wd = tmp_path / "wd"
    code, out, err = interrupt(["run_train.py", *TINY, "--config.train.total_steps=2000", "--workdir", wd], wd)
    assert code == 130 and "Traceback" not in err, err
    saved = [line for line in out.splitlines() if line.startswith("SIGINT: saving a checkpoint at step")]
    assert saved, out
    step = int(saved[0].split("at step ")[1].split()[0])
    assert os.listdir(wd / "checkpoints") == [str(step)]
    code, out, err = run(*TINY, "--config.train.total_steps=2000", "--max_steps", step + 1, "--workdir", wd)
    assert code == 0 and f"resumed from step {step}" in out, err


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_fast_dev_run_checks_a_real_recipe_and_leaves_nothing(tmp_path):
    before = set(os.listdir(tempfile.gettempdir()))
    had_runs = set(os.listdir(os.path.join(ROOT, "runs"))) if os.path.isdir(os.path.join(ROOT, "runs")) else set()
    code, out, err = run("--config", "configs/x4.py", "--fast_dev_run", "--config.train.batch_size=2",
                         "--config.data.gt_size=128", "--config.degrade.gt_size=64", "--config.data.val_max_size=64",
                         "--config.model.num_block=2", "--config.data.num_workers=0")
    assert code == 0, err
    line = [x for x in out.splitlines() if x.startswith("fast dev run passed")]
    assert line and "2 train steps" in line[0] and "validation on 1 image" in line[0] and "saved and restored" in line[0]
    assert "realesrnet_x4.pth" in line[0] and "peak memory" in line[0]
    assert not [d for d in set(os.listdir(tempfile.gettempdir())) - before if d.startswith("jaxsr-fast-dev-run-")]
    now_runs = set(os.listdir(os.path.join(ROOT, "runs"))) if os.path.isdir(os.path.join(ROOT, "runs")) else set()
    assert now_runs == had_runs


def test_interpolation_of_two_exports(snapshots, tmp_path):
    from jaxsr import weights

    src, _ = snapshots
    a, b = src / "models" / "demo_x4_step4.safetensors", src / "models" / "demo_x4_step12.pth"
    ta, tb = weights.read_state_dict(a)[0], weights.read_state_dict(b)[0]
    for alpha, want in ((0, ta), (1, tb), (0.5, {k: (ta[k] + tb[k]) / 2 for k in ta})):
        out = tmp_path / f"mix{alpha}.safetensors"
        r = subprocess.run([sys.executable, "-m", "convert.interpolate", str(a), str(b), str(out), "--alpha", str(alpha)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "wrote" in r.stdout, r.stderr
        got = weights.read_state_dict(out)[0]
        assert got.keys() == want.keys() and all(got[k].tobytes() == want[k].astype(got[k].dtype).tobytes() for k in got), alpha
    # another architecture, or the same one with other hyperparameters, is refused by name
    from test_layout import SMALL, perturbed

    weights.export(perturbed(SMALL["compact"]), SMALL["compact"], tmp_path / "compact.pth")
    wider = {**SMALL["esrgan"], "num_feat": 16}
    weights.export(perturbed(wider), wider, tmp_path / "other.pth")
    for other, needle in ((tmp_path / "compact.pth", "the architectures differ"), (tmp_path / "other.pth", "their tensors differ")):
        r = subprocess.run([sys.executable, "-m", "convert.interpolate", str(a), str(other), str(tmp_path / "x.pth"), "--alpha", "0.5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "x.pth").exists()


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_weights_and_biases_mirroring_is_optional(tmp_path):
    """log.wandb=True: without the package, one line saying how to get it; with it, an offline run (no network) that
    records the run's scalars in <workdir>/wandb."""
    import importlib.util

    args = [*TINY, "--config.train.total_steps=2", "--config.optim.warmup_steps=1", "--config.log.wandb=True",
            "--workdir", str(tmp_path / "wd")]
    r = subprocess.run([sys.executable, "run_train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "WANDB_MODE": "offline"})
    assert "Traceback" not in r.stderr, r.stderr
    if importlib.util.find_spec("wandb") is None:
        assert r.returncode == 2 and "log.wandb=True needs the wandb package: pip install wandb" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    runs = [d for d in os.listdir(tmp_path / "wd" / "wandb") if d.startswith("offline-run-")]
    assert len(runs) == 1 and any(f.endswith(".wandb") for f in os.listdir(tmp_path / "wd" / "wandb" / runs[0]))
