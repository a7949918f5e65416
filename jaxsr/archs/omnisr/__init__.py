"""OmniSR: the authors' released files (bare state dicts carrying thop's `total_ops`/`total_params` counters) and
traiNNer-redux's (`params_ema`) in, traiNNer-redux's wrapping out.

Detection and hyperparameters follow spandrel 0.4.2 (`architectures/OmniSR/__init__.py`): an OmniSR file has
`residual_layer.0.residual_layer.0.layer.0.fn.0.weight`, `input.weight` and `up.0.weight`; num_feat and in_ch come
from `input.weight`, bias iff `input.bias`, scale and out_ch from `up.0.weight` (tried as out_ch = in_ch, 3, 4, 1),
res_num from the length of `residual_layer`, block_num from the first group's (less its closing conv), pe iff the
first block's `rel_pos_bias` table, whose (2w - 1)^2 rows give window_size. Without pe the keys cannot tell the
window: spandrel takes 8, and so does a file's inferred spec (jaxsr's exports record theirs, and warn where spandrel
would run them with another). The thop counters are dropped on reading, as spandrel drops them.
"""
import math

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.archs.upsample import scale_and_out_ch
from jaxsr.errors import WeightsError

from .model import DEFAULTS, OmniSR, build

_FIRST = "residual_layer.0.residual_layer.0.layer"
_JUNK = ("total_ops", "total_params")  # thop's profiling buffers, left in the released files


def detect(sd):
    return {f"{_FIRST}.0.fn.0.weight", "input.weight", "up.0.weight"} <= set(sd)


def infer_spec(sd):
    w = sd["input.weight"]
    num_feat, in_ch = int(w.shape[0]), int(w.shape[1])
    scale, out_ch = scale_and_out_ch(int(sd["up.0.weight"].shape[0]), in_ch)
    table = sd.get(f"{_FIRST}.2.fn.rel_pos_bias.weight")
    window = DEFAULTS["window_size"] if table is None else int((math.sqrt(int(table.shape[0])) + 1) / 2)
    if table is not None and (2 * window - 1) ** 2 != int(table.shape[0]):
        raise WeightsError(f"unsupported OmniSR variant: a relative-position table of {int(table.shape[0])} rows is no "
                           "(2 * window - 1)^2 (spandrel cannot rebuild it either)")
    if num_feat % 4:
        raise WeightsError(f"unsupported OmniSR variant: num_feat {num_feat} is no multiple of 4 (the channel attentions' "
                           "4 heads; spandrel cannot build it either)")
    return {"arch": "omnisr", "scale": scale, "in_ch": in_ch, "out_ch": out_ch, "num_feat": num_feat,
            "block_num": seq_len(sd, "residual_layer.0.residual_layer") - 1, "pe": table is not None,
            "window_size": window, "res_num": seq_len(sd, "residual_layer"), "bias": "input.bias" in sd}


def from_torch(sd):
    return {k: v for k, v in sd.items() if not k.endswith(_JUNK)}


SPANDREL_GAPS = (
    (lambda s: not s["pe"] and int(s["window_size"]) != DEFAULTS["window_size"],
     lambda s: f"OmniSR with pe=False and window_size={s['window_size']}: without the position-bias table the keys do not "
               f"tell the window, and spandrel/chaiNNer build {DEFAULTS['window_size']}, so they will load this export but "
               "compute other outputs (jaxsr reads the window from the file's metadata)"),
)

ARCH = Arch(
    name="omnisr",
    what="an OmniSR model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    pth_wrapper="params_ema",  # traiNNer-redux saves its EMA generator so; spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # one PixelShuffle(s) of any s; traiNNer-redux's template offers 1, 2, 3, 4 and 8
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "OmniSR", "build"]
