"""SRFlow x4 (kind='srflow', docs/srflow.md): Lugmayr et al., "SRFlow: Learning the Super-Resolution Space with
Normalizing Flow" (ECCV 2020), with the options of andreas128/SRFlow's code/confs/SRFlow_DF2K_4X.yml:

  - network: SRFlow_DF2K_4X.pth's (RRDB encoder nf 64, nb 23, gc 32; flow K 16, L 3, two uncoupled steps per level,
    hidden 64, stackRRDB blocks 1, 8, 15, 22);
  - loss: the NLL alone (train.weight_fl 1, no weight_l1), without dequantization noise, as the reference's
    optimize_parameters calls the net (add_gt_noise False); srflow.quant 32 is datasets.train.quant, used with
    --config.srflow.add_gt_noise=True;
  - encoder: path.pretrain_model_G is RRDB_DF2K_4X.pth with load_submodule RRDB: give an ESRGAN x4 file as
    --config.srflow.encoder_weights=...; train_RRDB_delay 0.5: frozen for the first half of the steps;
  - Adam lr 2.5e-4, betas (0.9, 0.99), no weight decay; MultiStepLR halving at lr_steps_rel 0.5, 0.75, 0.9, 0.95 of
    niter 200k; no EMA (the reference keeps none); batch 12 of 160 px HR patches (GT_size 160), flips only
    (use_flip; the yml sets no use_rot); bicubic LR made on the fly (the reference reads DF2K_X4 pickles);
  - validation every 40k steps on up to 20 images (n_max), heats 0, 0.5, 0.75, 1 with 3 samples each; checkpoints
    every 1000 steps (save_checkpoint_freq).

Fine-tune a released file with --config.model.arch=auto --config.init_weights=SRFlow_DF2K_4X.pth (its encoder then
needs no encoder_weights; --config.srflow.train_rrdb_delay=0 trains it from the start).
"""
from ml_collections import ConfigDict

from jaxsr import archs
from jaxsr.train.config import base_config

NITER = 200_000


def get_config():
    c = base_config()
    c.kind = "srflow"
    c.name = "srflow"
    c.scale = 4
    c.model = ConfigDict(dict(arch="srflow", **archs.get("srflow").defaults), type_safe=False)
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = c.data.gt_size = 160
    c.data.use_rot = False
    c.losses = {}
    c.srflow.update(nll_weight=1.0, train_rrdb_delay=0.5, add_gt_noise=False, quant=32, heats=(0.0, 0.5, 0.75, 1.0),
                    n_sample=3)
    c.optim.update(name="adam", lr=2.5e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep",
                   milestones=tuple(int(f * NITER) for f in (0.5, 0.75, 0.9, 0.95)), gamma=0.5, ema_decay=0.0)
    c.train.update(total_steps=NITER, batch_size=12, ckpt_every=1000)
    c.val.every = 40_000
    c.data.val_max_images = 20
    return c
