"""RGT x4 from scratch: traiNNer-redux's `options/_templates/train/RGT/RGT_fromscratch.yml` (RGT: Chen et al.,
"Recursive Generalization Transformer for Image Super-Resolution", ICLR 2024, arXiv 2303.06373).

Values from that template unless a comment says why not:
  - network `rgt` (traiNNer-redux's rgt, the paper's RGT): embed 180, 8 groups of 6 blocks, 6 heads, MLP ratio 2,
    rectangle windows 8x32, c_ratio 0.5, 1conv, pixelshuffle; RGT-S (jaxsr.archs.rgt.VARIANTS['rgt_s']):
    --config.model.depth="(6,6,6,6,6,6)" --config.model.num_heads="(6,6,6,6,6,6)";
  - LR crops 64 (GT 256), batch 8 (the template's; its note: the paper's effective 32), hflip + rotation;
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 250k/400k/450k/475k of 500k;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart);
  - remat per block (use_chk) is jaxsr's choice, not the template's: the same numbers in less memory.
The template's bf16 autocast is jaxsr's compute_dtype 'auto' (bfloat16 on GPU/TPU, float32 on CPU). The template
reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'). Give
--config.data.lr_dir (or train_lr_dir) for paired LR. Exports are the authors' layout ({'params': ...} with the
64 px shift masks), which spandrel/chaiNNer load (RGT).
"""
from jaxsr.archs.rgt import VARIANTS
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    # the list fields as tuples, so that the command line can override them
    shape = {k: tuple(v) for k, v in VARIANTS["rgt"].items() if isinstance(v, list)}
    return fidelity_stage("rgt", lq_size=64, batch_size=8, lr=2e-4, milestones=(250_000, 400_000, 450_000, 475_000),
                          total_steps=500_000, use_chk=True, **shape)
