"""Writes expected.json beside this file: pyiqa's own TOPIQ-FR module on recipe.py's weights and image pairs.

Run by hand, never by the tests or CI, with a scratch folder holding pyiqa 0.1.16 and timm 1.0.31 without their
dependencies (pip's --no-deps --target /tmp/iqa_pkgs; nothing goes into the project's environment), and a Python that
has torch (2.13.0 here), numpy and scikit-image:

    PYIQA_PATH=/tmp/iqa_pkgs python tests/golden/topiq/make_golden.py

What runs is pyiqa's pyiqa/archs/topiq_arch.py (CFANet, the `topiq_fr` options: resnet50, use_ref=True,
model_name cfanet_fr_kadid_res50) with timm's real resnet50, loading the weights from a .pth in pyiqa's release layout
({'params': state_dict}) through its own load_pretrained_network. Stubbed, because nothing of them runs for TOPIQ-FR
and torchvision has no CPU build here: torchvision, huggingface_hub (URL strings only), pyiqa's package __init__s,
its registry and downloader, its CLIP and Swin modules, facexlib. Nothing is downloaded.
"""
import copy
import enum
import hashlib
import json
import os
import sys
import tempfile
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import recipe  # noqa: E402


def _unavailable(*args, **kwargs):
    raise RuntimeError("stubbed: TOPIQ-FR does not use this")


class _Placeholders(types.ModuleType):
    """A module whose every name is a class that fails when used."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": _unavailable})


def _module(name, cls=types.ModuleType, **attrs):
    m = cls(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def import_pyiqa(root):
    """(CFANet class, pyiqa version, timm version) from the pyiqa source under `root`, with the stubs above."""
    sys.path.insert(0, root)

    class InterpolationMode(enum.Enum):
        NEAREST, BILINEAR, BICUBIC, BOX, HAMMING, LANCZOS = "nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"

    tv = _module("torchvision", _Placeholders, __path__=[])
    tv.transforms = _module("torchvision.transforms", _Placeholders, __path__=[], InterpolationMode=InterpolationMode)
    tv.transforms.functional = _module("torchvision.transforms.functional", _Placeholders, InterpolationMode=InterpolationMode,
                                       resize=_unavailable)
    _module("torchvision.ops", _Placeholders, __path__=[])
    _module("torchvision.ops.misc", _Placeholders)
    _module("torchvision.datasets", _Placeholders, __path__=[])
    _module("huggingface_hub", hf_hub_url=lambda repo_id, filename: f"hf://{repo_id}/{filename}")
    pkg = os.path.join(root, "pyiqa")
    _module("pyiqa", __path__=[pkg])
    _module("pyiqa.archs", __path__=[os.path.join(pkg, "archs")])
    _module("pyiqa.utils", __path__=[os.path.join(pkg, "utils")])
    _module("pyiqa.utils.registry", ARCH_REGISTRY=types.SimpleNamespace(register=lambda *a, **k: (lambda c: c)))
    _module("pyiqa.utils.download_util", DEFAULT_CACHE_DIR=os.devnull, load_file_from_url=_unavailable)
    _module("pyiqa.archs.clip_model", load=_unavailable)
    _module("pyiqa.archs.topiq_swin", create_swin=_unavailable)
    _module("facexlib", __path__=[])
    _module("facexlib.utils", __path__=[])
    _module("facexlib.utils.face_restoration_helper", FaceRestoreHelper=_unavailable)
    import timm
    from pyiqa.archs import topiq_arch

    from pyiqa.version import __version__

    return topiq_arch.CFANet, __version__, timm.__version__


def weights_digest(sd):
    h = hashlib.sha256()
    for key, _, _ in recipe.layout():
        h.update(key.encode())
        h.update(np.ascontiguousarray(sd[key]).tobytes())
    return h.hexdigest()


def image_digest(img):
    return hashlib.sha256(np.round(img * 255.0).astype(np.uint8).tobytes()).hexdigest()[:16]


def main():
    import torch

    torch.set_num_threads(2)
    CFANet, pyiqa_version, timm_version = import_pyiqa(os.environ.get("PYIQA_PATH", "/tmp/iqa_pkgs"))
    opts = dict(semantic_model_name="resnet50", model_name="cfanet_fr_kadid_res50", use_ref=True)  # pyiqa's topiq_fr
    fresh = CFANet(**opts, pretrained=False, backbone_pretrain=False).eval()
    init = copy.deepcopy(fresh.state_dict())
    sd = recipe.state_dict()
    assert list(sd) != [] and set(sd) == set(init), set(sd) ^ set(init)
    for k, v in init.items():
        assert tuple(v.shape) == sd[k].shape, (k, v.shape, sd[k].shape)
        assert (torch.from_numpy(np.asarray(sd[k])) != v).all(), f"{k} keeps some of its initial values"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "topiq_fr.pth")
        torch.save({"params": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}}, path)
        net = CFANet(**opts, pretrained=False, backbone_pretrain=False, pretrained_model_path=path).eval()
    fresh.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)  # the layout is exact
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh.state_dict().values()))

    t = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]  # noqa: E731
    scores, inputs = {}, {}
    with torch.no_grad():
        for name, dist, ref in recipe.pairs():
            scores[name] = float(net(t(dist), t(ref)))
            inputs[name] = [image_digest(dist), image_digest(ref)]
            print(f"{name:28s} {dist.shape[0]}x{dist.shape[1]}  pyiqa topiq_fr {scores[name]:.7f}")
        ref = recipe.pairs()[0][2]
        feats = net.semantic_model(net.preprocess(t(ref)))
        probes = [float(feats[lv][0, c, y, x]) for lv, y, x, c in recipe.PROBES]
        level_means = [float(f.mean()) for f in feats]
    out = {
        "made_by": "tests/golden/topiq/make_golden.py (see its docstring)",
        "pyiqa": pyiqa_version, "timm": timm_version, "torch": torch.__version__, "numpy": np.__version__,
        "seed": 20240601, "weights_sha256": weights_digest(sd), "inputs_sha256_8bit": inputs,
        "scores": scores, "probe_at": recipe.PROBES, "probes": probes, "level_means": level_means,
    }
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", os.path.join(HERE, "expected.json"))


if __name__ == "__main__":
    main()
