"""First contact: the README's set-up block, run as written in a fresh clone with the distribution's own python3 first
on PATH (an "externally managed" interpreter, PEP 668, on Debian 12 and Ubuntu 23.04+), and then the README's first
training command, shortened, leaves an export."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PYTHON = "/usr/bin/python3"


def readme_block(heading):
    """The first ``` block under a README heading."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```\n(.*?)\n```", section, re.S)[1]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON) or shutil.which("git") is None, reason="needs /usr/bin/python3 and git")
def test_readme_setup_on_a_stock_python_then_the_first_command(tmp_path):
    clone = tmp_path / "jaxsr"
    subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True)
    setup = readme_block("Set up")
    train = readme_block("Train").splitlines()[0]
    assert setup.startswith("bash setup.sh") and train.startswith("python run_train.py --config configs/demo.py")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "CONDA_PREFIX", "PYTHONHOME")}
    env["PATH"] = "/usr/bin:/bin:" + env.get("PATH", "")  # the distribution's python3 first, as a new user has it
    short = (" --config.train.total_steps=3 --config.train.batch_size=2 --config.val.every=3 --config.data.val_max_size=64"
             " --config.optim.warmup_steps=1 --config.data.gt_size=32 --config.degrade.gt_size=32 --workdir runs/first")
    script = f"set -e\n{setup}\n{train}{short}\n"
    r = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "externally-managed" not in r.stderr and "break-system-packages" not in r.stdout + r.stderr
    assert "set-up: creating the project environment" in r.stdout and "set-up: torch:" in r.stdout
    assert os.path.exists(clone / "runs" / "first" / "models" / "demo_x4.pth")
    venv_python = clone / ".venv" / "bin" / "python"
    (tmp_path / "elsewhere").mkdir()
    probe = subprocess.run([str(venv_python), "-c", "import jaxsr, sys; print(jaxsr.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path / "elsewhere")
    assert probe.stdout.startswith(str(clone))  # the clone's own environment, pointing at the clone
    # a second run finds everything in place
    again = subprocess.run(["bash", "setup.sh"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already set up" in again.stdout, again.stdout + again.stderr
