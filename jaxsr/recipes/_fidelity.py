"""What the from-scratch fidelity recipes share: traiNNer-redux's `options/_templates/train/<ARCH>/*_fromscratch.yml`
(and `*_fidelity.yml`) stage.

Those templates all give: paired LR folders, Charbonnier loss (weight 1), AdamW with betas (0.9, 0.99) and weight
decay 0, MultiStepLR with gamma 0.5, EMA 0.999 (their ema_power warm-up has no jaxsr counterpart), hflip + rotation.
Only the network, lr, milestones, length, crop and batch differ per architecture: the arguments of `fidelity_stage`.
Here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'); give --config.data.lr_dir (or train_lr_dir)
for paired LR. Validation takes centre crops of at most 512 px, to keep it quick on large photographs.
"""
from ml_collections import ConfigDict

from jaxsr import archs
from jaxsr.train.config import base_config


def fidelity_stage(arch, *, lq_size, batch_size, lr, milestones, total_steps, **model):
    """The x4 config of `arch` with its DEFAULTS (`model` overriding some), trained as the templates say."""
    c = base_config()
    c.name = arch
    c.scale = 4
    c.model = ConfigDict(dict(arch=arch, **{**archs.get(arch).defaults, **model}), type_safe=False)
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = c.data.gt_size = lq_size * c.scale
    c.losses = {"charbonnier": dict(name="charbonnier", weight=1.0, target="gt")}
    c.optim.update(name="adamw", lr=lr, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep", gamma=0.5,
                   milestones=tuple(milestones), ema_decay=0.999)
    c.train.update(total_steps=total_steps, batch_size=batch_size)
    c.data.val_max_size = 512
    return c
