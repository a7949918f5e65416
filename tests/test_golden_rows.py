"""No number changes: the rows that run_train.py writes to metrics.jsonl for the demo recipe (12 steps with 4 of warm-up, logged every
step, validated at 0, 6 and 12 on 96 px crops; bicubic, Real-ESRGAN degradations, and a GAN stage from step 4) equal the rows
recorded before the trainer was split into one loop and its training kinds (tests/golden/rows.json; relative 1e-4).
The tolerance is the spread between CPUs, not between programs: XLA:CPU's kernels sum in another order on another
CPU, and on an AMD EPYC the rows differ from the recorded ones by up to 3.4e-5 relative in grad_norm (the norm of
every gradient after a GAN stage's steps), 5e-6 in the losses; a change to the math (a loss term, one step's lr, the
EMA) moves them by far more.

Record them again (only on purpose, after a change that is meant to change numbers):
    python tests/test_golden_rows.py --record
They were recorded with the trainer of commit 82458a6, from a worktree of it (`git worktree add /tmp/old 82458a6`,
this file copied into its tests/, then the command above run there with PYTHONPATH=/tmp/old).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "rows.json")
DEMO = ["--config", "configs/demo.py", "--config.train.total_steps=12", "--config.train.log_every=1", "--config.val.every=6",
        "--config.data.val_max_size=96",
        "--config.optim.warmup_steps=4"]
RUNS = {
    "bicubic": DEMO,
    "realesrgan": [*DEMO, "--config.degrade.mode=realesrgan", "--config.degrade.queue_size=16"],
    "gan": [*DEMO, "--config.gan.enabled=True", "--config.gan.start_step=4", "--config.gan.discriminator.num_feat=8",
            "--config.losses={'l1': {'name': 'l1'}, 'gan': {'name': 'gan', 'weight': 0.1}}"],
}


def rows(name, workdir):
    r = subprocess.run([sys.executable, "run_train.py", *RUNS[name], "--workdir", str(workdir)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_demo_rows_are_the_recorded_ones(name, tmp_path):
    with open(GOLDEN) as f:
        want = json.load(f)[name]
    got = rows(name, tmp_path / name)
    assert [sorted(r) for r in got] == [sorted(r) for r in want]  # the same rows with the same fields
    for g, w in zip(got, want):
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-4, atol=1e-7, err_msg=f"step {w['step']}: {k}")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import tempfile

    tmp = tempfile.mkdtemp()
    recorded = {name: rows(name, os.path.join(tmp, name)) for name in sorted(RUNS)}
    with open(GOLDEN, "w") as f:
        json.dump(recorded, f, indent=1)
    print(f"wrote {GOLDEN}")
