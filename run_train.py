"""Train a super-resolution model: python run_train.py --config configs/x4.py [--config.<field>=<value> ...]

A shim over `jaxsr.train.main` (installed: `jaxsr-train`). Rerunning the same command on the same --workdir
resumes from the latest complete checkpoint; see the README and docs/reliability.md.
"""
from jaxsr.train.main import run

if __name__ == "__main__":
    run()
