"""ATD x4 from scratch (Zhang et al., "Transcending the Limit of Local Window: Advanced Super-Resolution Transformer
with Adaptive Token Dictionary", CVPR 2024, arXiv 2401.08209), through the fidelity stage the traiNNer-redux
from-scratch templates share (recipes/_fidelity.py: Charbonnier, AdamW betas (0.9, 0.99), MultiStep gamma 0.5,
EMA 0.999, hflip + rotation).

  - network `atd` (jaxsr.archs.atd.VARIANTS['atd'], traiNNer-redux's `atd`): embed_dim 210, 6 groups of 6 layers,
    6 heads, window 16, category_size 256, 128 dictionary tokens, reduced dim 20, ConvFFN kernel 5, MLP ratio 2,
    pixelshuffle, 1conv: 20.26M parameters;
  - lr 2e-4 halved at 250k/400k/450k/475k of 500k iterations: the BasicSR classical-SR schedule (as the HAT and
    SwinIR recipes); LR crops 64 (GT 256), batch 16.
ATD-light: --config.model.* with jaxsr.archs.atd.VARIANTS['atd_light'] (embed 48, 4x6 layers, 4 heads, category 128,
64 tokens, reduced dim 8, kernel 7, MLP ratio 1, pixelshuffledirect; 769K parameters). Exports are BasicSR's layout
({'params_ema': ...}), which spandrel/chaiNNer load (ATD, tags 210dim, 16w, 256cat).
"""
from ml_collections import ConfigDict

from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    # remat per block (use_chk) is jaxsr's: same numbers, less memory (as the SwinIR/HAT recipes)
    c = fidelity_stage("atd", lq_size=64, batch_size=16, lr=2e-4, milestones=(250_000, 400_000, 450_000, 475_000),
                       total_steps=500_000, use_chk=True)
    # tuples, so that --config.model.depths='(6, 6, 6, 6)' can override them
    c.model = ConfigDict({k: tuple(v) if isinstance(v, list) else v for k, v in c.model.to_dict().items()},
                         type_safe=False)
    return c
