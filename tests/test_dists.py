"""DISTS against the reference package DISTS_pytorch 0.1 on real photographs, with every weight off its shipped value:
a random (seeded) VGG16 behind a torchvision.models stub and random positive alpha/beta, saved to the files
`load_dists` reads. And the refusals: missing files, files of other networks."""
import importlib.util
import os
import sys
import types

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import photo

from jaxsr.dists import load_dists
from jaxsr.errors import WeightsError
from jaxsr.weights import write_safetensors

TOL = 1e-5  # absolute, on scores of order 0.1-1


def vgg16_features():
    """torchvision's VGG16 `features` layout (conv3x3 / ReLU(inplace) / MaxPool, indices 0..30)."""
    layers, c = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        layers += [nn.MaxPool2d(2, 2)] if v == "M" else [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
        c = v if v != "M" else c
    return nn.Sequential(*layers)


@pytest.fixture
def weights(tmp_path):
    """(VGG16 features, alpha, beta, backbone .pth, alpha/beta .pt): seeded random weights and the files holding them."""
    torch.manual_seed(0)
    features = vgg16_features()
    with torch.no_grad():  # He init keeps the deep stages image-dependent (torch's default fades them into the biases)
        for m in features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.bias.uniform_(-0.05, 0.05)
    alpha, beta = torch.rand(1, 1475, 1, 1) + 0.05, torch.rand(1, 1475, 1, 1) + 0.05  # off the shipped values
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16.pth")
    torch.save({"alpha": alpha, "beta": beta}, tmp_path / "weights.pt")
    return features, alpha, beta, str(tmp_path / "vgg16.pth"), str(tmp_path / "weights.pt")


@pytest.fixture
def reference(weights, monkeypatch):
    """(DISTS_pytorch module, backbone file, alpha/beta file), the module holding the files' weights."""
    features, alpha, beta, backbone, ab = weights
    models = types.ModuleType("torchvision.models")
    models.vgg16 = lambda pretrained=False, **kw: types.SimpleNamespace(features=features)
    monkeypatch.setattr(sys.modules["torchvision"], "models", models, raising=False)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    from DISTS_pytorch import DISTS_pt  # its `from torchvision import models` needs the stub above (setup.sh installs it)

    monkeypatch.setattr(DISTS_pt, "models", models)  # in case another test imported it first
    ref = DISTS_pt.DISTS(load_weights=False).eval()
    with torch.no_grad():
        ref.alpha.copy_(alpha)
        ref.beta.copy_(beta)
    assert ref.stage1[0] is features[0] and ref.stage5[-1] is features[29]
    return ref, backbone, ab


def ref_score(ref, a, b):
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        return float(ref(t(a), t(b)))


def degraded(img, seed=0):
    blurred = cv2.GaussianBlur(img, (0, 0), 1.2)
    return np.clip(blurred + np.random.default_rng(seed).normal(0, 0.03, img.shape), 0, 1).astype(np.float32)


def test_dists_equals_dists_pytorch(reference, tmp_path):
    ref, backbone, ab = reference
    astro = photo("astronaut", 96, 96, top=60, left=160)
    cat = photo("chelsea", 75, 83, top=40, left=120)  # odd size: L2 pooling's padding
    pairs = [(degraded(astro), astro), (astro, photo("astronaut", 96, 96, top=62, left=163)),
             (degraded(cat, 1), cat), (cat, np.ascontiguousarray(cat[:, ::-1])), (photo("astronaut", 75, 83), cat)]
    ours = load_dists(backbone, ab)
    assert ours.net == "dists"
    diffs = []
    for sr, hr in pairs:
        want = ref_score(ref, sr, hr)
        got = ours(sr, hr)
        diffs.append(abs(got - want))
        assert 0 < want < 1 and abs(got - want) <= TOL, (got, want)
    print("max |jaxsr - DISTS_pytorch| (.pth backbone):", max(diffs))
    assert abs(ours(astro, astro)) <= TOL and abs(ref_score(ref, astro, astro)) <= TOL  # identical: ~0 (float32 cancellation)
    # the same weights as .safetensors
    write_safetensors(tmp_path / "vgg16.safetensors", {f"features.{k}": v.numpy() for k, v in vgg16_state(ref).items()})
    ours_st = load_dists(str(tmp_path / "vgg16.safetensors"), ab)
    sr, hr = pairs[0]
    assert abs(ours_st(sr, hr) - ref_score(ref, sr, hr)) <= TOL


def test_each_stage_equals_dists_pytorch(reference, tmp_path):
    """alpha/beta on one stage at a time (the image, relu1_2 .. relu5_3), so no stage hides behind the others."""
    ref, backbone, _ = reference
    sr, hr = degraded(photo("chelsea", 72, 88, top=30, left=100), 2), photo("chelsea", 72, 88, top=30, left=100)
    alpha, beta, edges = ref.alpha.detach().clone(), ref.beta.detach().clone(), np.cumsum([0, 3, 64, 128, 256, 512, 512])
    for k in range(6):
        mask = torch.zeros(1, 1475, 1, 1)
        mask[:, edges[k]:edges[k + 1]] = 1
        with torch.no_grad():
            ref.alpha.copy_(alpha * mask)
            ref.beta.copy_(beta * mask)
        torch.save({"alpha": ref.alpha.detach().clone(), "beta": ref.beta.detach().clone()}, tmp_path / f"stage{k}.pt")
        got, want = load_dists(backbone, str(tmp_path / f"stage{k}.pt"))(sr, hr), ref_score(ref, sr, hr)
        print(f"stage {k}: jaxsr {got:.7f} DISTS_pytorch {want:.7f} |diff| {abs(got - want):.2e}")
        assert 0.005 < want < 1 and abs(got - want) <= TOL, (k, got, want)


def vgg16_state(ref):
    """features.N -> tensor, back from the reference's stages (the VGG16 convs keep their torchvision indices)."""
    out = {}
    for stage in (ref.stage1, ref.stage2, ref.stage3, ref.stage4, ref.stage5):
        for name, m in stage.named_children():
            if isinstance(m, nn.Conv2d):
                out[f"{name}.weight"], out[f"{name}.bias"] = m.weight.detach(), m.bias.detach()
    return out


def test_reads_the_shipped_alpha_beta(weights):
    """The package's own weights.pt (read safely, never torch.load) fits the loader's shapes."""
    spec = importlib.util.find_spec("DISTS_pytorch")
    assert spec is not None, "DISTS_pytorch is missing: pip install --no-deps DISTS_pytorch==0.1 (setup.sh does)"
    ours = load_dists(weights[3], os.path.join(os.path.dirname(spec.origin), "weights.pt"))
    img = photo("chelsea", 64, 64)
    assert 0 < ours(degraded(img), img) < 1


def test_refuses_missing_and_wrong_files(weights, tmp_path):
    *_, backbone, ab = weights
    for args in ((str(tmp_path / "nope.pth"), ab), (backbone, str(tmp_path / "nope.pt"))):
        with pytest.raises(WeightsError, match="not found.*vgg16-397923af.pth.*DISTS_pytorch"):
            load_dists(*args)
    # an lpips linear-layer file, or the backbone, given as alpha/beta
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lins, tmp_path / "vgg.pth")
    for wrong in (str(tmp_path / "vgg.pth"), backbone):
        with pytest.raises(WeightsError, match="no alpha/beta.*not DISTS_pytorch's weights.pt"):
            load_dists(backbone, wrong)
    # alpha/beta of another size
    torch.save({"alpha": torch.rand(1, 1472, 1, 1), "beta": torch.rand(1, 1472, 1, 1)}, tmp_path / "short.pt")
    with pytest.raises(WeightsError, match="1472/1472 values, DISTS has 1475"):
        load_dists(backbone, str(tmp_path / "short.pt"))
    # alpha/beta as the backbone; an AlexNet backbone (features.0 is 11x11, features.2 a pool)
    with pytest.raises(WeightsError, match="features.0 missing, not a torchvision VGG16"):
        load_dists(ab, ab)
    torch.save({"features.0.weight": torch.rand(64, 3, 11, 11), "features.0.bias": torch.rand(64)}, tmp_path / "alex.pth")
    with pytest.raises(WeightsError, match=r"features.0.weight is \(64, 3, 11, 11\), VGG16 has \(64, 3, 3, 3\)"):
        load_dists(str(tmp_path / "alex.pth"), ab)
    with pytest.raises(ValueError, match="one shape"):
        load_dists(backbone, ab)(photo("chelsea", 64, 64), photo("chelsea", 64, 72))


def test_evaluate_reports_dists_as_a_column(weights, tmp_path):
    from test_evaluate import tiny_model

    from jaxsr.evaluate import main
    from jaxsr.imageio import write_image

    *_, backbone, ab = weights
    tiny_model(tmp_path / "m.pth")
    (tmp_path / "hr").mkdir()
    write_image(tmp_path / "hr" / "a.png", photo("astronaut", 64, 64, top=60, left=160))
    assert main(["--weights", str(tmp_path / "m.pth"), "--hr", str(tmp_path / "hr"), "--out", str(tmp_path / "r"),
                 "--dists", backbone, ab]) == 0
    header, *lines = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert header == "image,model,psnr,ssim,dists" and all(0 < float(line.split(",")[-1]) < 1 for line in lines)
