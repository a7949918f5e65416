"""SRFormer x4 from scratch: traiNNer-redux's `options/_templates/train/SRFormer/SRFormer_fromscratch.yml` (SRFormer: Zhou
et al., "SRFormer: Permuted Self-Attention for Single Image Super-Resolution", ICCV 2023, arXiv 2303.09735).

Values from that template unless a comment says why not:
  - network `srformer` with traiNNer-redux's defaults: embed_dim 180, 6 groups of 6 PSA blocks, 6 heads, window 24
    (12 x 12 permuted key/value windows), MLP ratio 2, img_size 48, pixelshuffle, 1conv (jaxsr's `srformer` variant);
  - LR crops 64 (GT 256), batch 16, hflip + rotation;
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 250k/400k/450k/475k of 500k;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart).
SRFormer-light: --config.model.* with jaxsr.archs.srformer.VARIANTS['srformer_light'] (traiNNer-redux's
SRFormer_light_fromscratch.yml). Exports are traiNNer-redux's layout ({'params_ema': ...}), which spandrel/chaiNNer
load (SRFormer, tags medium, s48w24, 180dim, 1conv).
"""
from ml_collections import ConfigDict

from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    # remat per block (use_chk) is jaxsr's, not the template's: same numbers, less memory (as the SwinIR/HAT recipes)
    c = fidelity_stage("srformer", lq_size=64, batch_size=16, lr=2e-4, milestones=(250_000, 400_000, 450_000, 475_000),
                       total_steps=500_000, use_chk=True)
    # tuples, so that --config.model.depths='(6, 6, 6, 6)' can override them
    c.model = ConfigDict({k: tuple(v) if isinstance(v, list) else v for k, v in c.model.to_dict().items()},
                         type_safe=False)
    return c
