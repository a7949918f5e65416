"""DAT-2 x4 fidelity training on bicubic LR (DAT paper settings, traiNNer-redux's DAT_2 fidelity template).

DAT-2: embed 180, 6x6 blocks, split [8, 32], expansion 2. LR 64 (GT 256), batch 8, L1, Adam 2e-4 betas
(0.9, 0.99) with MultiStep halving at 50/80/90/95% of 500k iterations (the DAT x2 schedule; the paper
fine-tunes x4 from x2 at 1e-4), EMA 0.999. Gradient checkpointing (use_chk) per block, as traiNNer's
template, because DAT training is memory-bound.
"""
from ml_collections import ConfigDict

from jaxsr.archs.dat import spec_for
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "dat2"
    c.scale = 4
    # every hyperparameter of the variant is a field, so any of them can be overridden from the command line
    spec = spec_for("dat_2", use_chk=True)
    c.model = ConfigDict({k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "scale"})
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = 256
    c.data.gt_size = 256
    c.losses = {"l1": dict(name="l1", weight=1.0, target="gt")}
    total = 500_000
    c.optim.update(name="adam", lr=2e-4, betas=(0.9, 0.99), schedule="multistep", gamma=0.5,
                   milestones=tuple(int(total * f) for f in (0.5, 0.8, 0.9, 0.95)))
    c.train.update(total_steps=total, batch_size=8)
    c.data.val_max_size = 512
    return c
