"""The loop is shared by training kinds: a toy second kind (tests/toy_kind.py, a 1x denoiser with its own step, data
and metric, written without touching the loop) gets resume, snapshots, branching and SIGINT handling from it."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import interrupt, metric_rows
from toy_kind import Denoiser, config

from jaxsr.train import loop

HERE = os.path.dirname(os.path.abspath(__file__))



@pytest.mark.usefixtures("quick_compiles_one_test")
def test_a_second_kind_resumes_keeps_snapshots_and_branches_bitwise(tmp_path):
    ref = tmp_path / "ref"
    assert loop.start(config(snapshot_every=4), str(ref), kind=Denoiser).run() == 8
    want = metric_rows(ref)
    assert sorted(want) == list(range(1, 9)) and want[8]["loss"] < want[1]["loss"]  # it learns
    val = metric_rows(ref, "val_psnr")
    assert sorted(val) == [4, 8] and np.isfinite(val[8]["val_psnr"])
    assert sorted(os.listdir(ref / "checkpoints"), key=int) == ["4", "8"]  # snapshots kept
    assert {"toy_x1_step4.safetensors", "toy_x1_step8.safetensors", "toy_x1.safetensors", "toy_x1_best.safetensors"} <= set(os.listdir(ref / "models"))

    # stopped at 3, rerun: the rows continue as if never stopped
    wd = tmp_path / "stopped"
    assert loop.start(config(stop_at=3), str(wd), kind=Denoiser).run() == 3
    again = loop.start(config(), str(wd), kind=Denoiser)
    assert again.resume[0] == 3 and again.run() == 8
    assert metric_rows(wd) == want

    # branched at the snapshot of step 4: steps 5..8 again, the later checkpoint moved aside
    assert loop.start(config(snapshot_every=4), str(ref), resume_from=4, kind=Denoiser).run() == 8
    assert metric_rows(ref) == want
    (aside,) = os.listdir(ref / "branched")
    assert os.listdir(ref / "branched" / aside / "checkpoints") == ["8"]


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_a_second_kind_saves_on_sigint_and_resumes_there(tmp_path):
    wd = tmp_path / "wd"
    code, out, err = interrupt([os.path.join(HERE, "toy_kind.py"), wd, "total_steps=100000"], wd, cwd=HERE)
    assert code == 130 and "Traceback" not in err, err
    saved = [line for line in out.splitlines() if line.startswith("SIGINT: saving a checkpoint at step")]
    step = int(saved[0].split("at step ")[1].split()[0])
    assert max(int(d) for d in os.listdir(wd / "checkpoints")) == step
    r = subprocess.run([sys.executable, os.path.join(HERE, "toy_kind.py"), str(wd), "total_steps=100000", f"stop_at={step + 2}"],
                       cwd=HERE, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"resumed from step {step}" in r.stdout, r.stderr
    assert sorted(metric_rows(wd)) == list(range(1, step + 3))
