"""LDL, focal frequency, multiscale and contextual losses against their references on real photographs: the
focal-frequency-loss package, and PyTorch transcriptions (labelled with their source) of traiNNer-redux's
ldl_loss / contextual_loss and victorca25's MultiscalePixelLoss. Values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import photo
from jaxsr.losses import build_losses, frequency, pixel
from jaxsr.losses.contextual import ContextualLoss
from jaxsr.losses.ldl import LDLLoss, artifact_map
from test_losses import torch_vgg19_features


def _photos(h, w):
    """GT crops of two photographs, a blurred+noisy 'SR' and a differently noisy 'EMA output'."""
    gt = np.stack([photo("astronaut", h, w, 60, 140), photo("coffee", h, w, 120, 200)])
    rng = np.random.default_rng(0)
    blur = (gt + np.roll(gt, 1, 1) + np.roll(gt, 1, 2)) / 3
    sr = np.clip(blur + rng.normal(0, 0.04, gt.shape), 0, 1).astype(np.float32)
    ema = np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1).astype(np.float32)
    return sr, gt, ema


def _t(x, grad=False):
    return torch.tensor(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)), requires_grad=grad)


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


# ----------------------------------------------------------------- LDL


def traiNNer_ldl(output, output_ema, gt, ksize=7):
    """Transcribed from traiNNer-redux traiNNer/losses/ldl_loss.py (get_local_weights, get_refined_artifact_map,
    LDLLoss.forward with criterion l1)."""
    residual_ema = torch.sum(torch.abs(gt - output_ema), 1, keepdim=True)
    residual_sr = torch.sum(torch.abs(gt - output), 1, keepdim=True)
    patch_level_weight = torch.var(residual_sr.clone(), dim=(-1, -2, -3), keepdim=True) ** (1 / 5)
    pad = (ksize - 1) // 2
    residual_pad = F.pad(residual_sr.clone(), pad=[pad, pad, pad, pad], mode="reflect")
    unfolded = residual_pad.unfold(2, ksize, 1).unfold(3, ksize, 1)
    pixel_level_weight = torch.var(unfolded, dim=(-1, -2), unbiased=True, keepdim=True).squeeze(-1).squeeze(-1)
    weight = patch_level_weight * pixel_level_weight
    weight[residual_sr < residual_ema] = 0
    return torch.nn.L1Loss()(torch.mul(weight, output), torch.mul(weight, gt)), weight


def test_ldl_equals_traiNNer_redux_value_map_and_gradient():
    sr, gt, ema = _photos(40, 52)
    ts = _t(sr, grad=True)
    ref, ref_map = traiNNer_ldl(ts, _t(ema), _t(gt))
    ref.backward()
    loss = LDLLoss()
    ours, g = jax.jit(jax.value_and_grad(loss))(jnp.asarray(sr), jnp.asarray(gt), jnp.asarray(ema))
    m = np.asarray(artifact_map(jnp.asarray(gt), jnp.asarray(sr), jnp.asarray(ema)))
    assert 0.2 < (m > 0).mean() < 0.9  # the EMA comparison masks part of the image, not all of it
    assert _rel(m, _nhwc(ref_map)) <= 1e-5
    assert float(ours) == pytest.approx(ref.item(), rel=1e-5)
    assert _rel(g, _nhwc(ts.grad)) <= 1e-4  # the gradient flows through the map, as in the reference


def test_ldl_term_needs_the_ema_output_and_is_zero_where_sr_is_gt():
    sr, gt, ema = (jnp.asarray(a) for a in _photos(24, 24))
    ls = build_losses([{"name": "ldl", "weight": 2.0}])
    assert "sr_ema" in ls.inputs and "sr_ema" not in build_losses([{"name": "l1"}]).inputs
    with pytest.raises(ValueError, match="sr_ema"):
        ls(sr, gt)
    total, logs = ls(sr, gt, sr_ema=ema)
    assert float(total) == pytest.approx(2.0 * float(LDLLoss()(sr, gt, ema)), rel=1e-6)
    total, _ = ls(gt, gt, sr_ema=ema)
    g = jax.grad(lambda s: ls(s, gt, sr_ema=ema)[0])(gt)
    assert float(total) == 0.0 and bool(jnp.all(jnp.isfinite(g)))


# ----------------------------------------------------------------- focal frequency


@pytest.mark.parametrize("opts", [{}, dict(alpha=2.0, patch_factor=2, log_matrix=True), dict(ave_spectrum=True, batch_matrix=True)])
def test_focal_frequency_equals_the_package(opts):
    from focal_frequency_loss import FocalFrequencyLoss

    sr, gt, _ = _photos(48, 64)
    ts = _t(sr, grad=True)
    ref = FocalFrequencyLoss(**opts)(ts, _t(gt))
    ref.backward()
    ours, g = jax.jit(jax.value_and_grad(lambda a, b: frequency.focal_frequency_loss(a, b, **opts)))(jnp.asarray(sr), jnp.asarray(gt))
    assert float(ours) == pytest.approx(ref.item(), rel=1e-5)
    assert _rel(g, _nhwc(ts.grad)) <= 1e-4  # the spectrum weight is a constant in both
    assert float(frequency.focal_frequency_loss(jnp.asarray(gt), jnp.asarray(gt), **opts)) == 0.0


# ----------------------------------------------------------------- multiscale


class Victorca25MultiscalePixelLoss(nn.Module):
    """Transcribed from victorca25/traiNNer codes/models/modules/loss.py, MultiscalePixelLoss (no mask)."""

    def __init__(self, loss_f=nn.L1Loss(), scale=5):
        super().__init__()
        self.criterion, self.downsample = loss_f, nn.AvgPool2d(2, stride=2, count_include_pad=False)
        self.weights = [1, 0.5, 0.25, 0.125, 0.125][:scale]

    def forward(self, x, y):
        loss = 0
        for i in range(len(self.weights)):
            loss += self.weights[i] * self.criterion(x, y)
            if i != len(self.weights) - 1:
                x, y = self.downsample(x), self.downsample(y)
        return loss


@pytest.mark.parametrize("criterion,scales", [("l1", 5), ("l2", 3)])
def test_multiscale_equals_victorca25(criterion, scales):
    sr, gt, _ = _photos(53, 67)  # odd sides: pooling floors as torch does
    ref = Victorca25MultiscalePixelLoss(nn.L1Loss() if criterion == "l1" else nn.MSELoss(), scales)(_t(sr), _t(gt)).item()
    ls = build_losses([{"name": "multiscale", "criterion": criterion, "scales": scales}])
    assert float(jax.jit(lambda a, b: ls(a, b)[0])(jnp.asarray(sr), jnp.asarray(gt))) == pytest.approx(ref, rel=1e-6)
    assert float(pixel.multiscale_loss(jnp.asarray(sr), jnp.asarray(gt), weights=(1, 0))) == pytest.approx(
        float(pixel.l1(jnp.asarray(sr), jnp.asarray(gt))), rel=1e-6)


# ----------------------------------------------------------------- contextual


def traiNNer_cx(I, T, distance="cosine", b=1.0, band_width=0.5):
    """Transcribed from traiNNer-redux traiNNer/losses/contextual_loss.py, ContextualLoss.calculate_CX_Loss with
    _create_using_dotP (cosine) / _create_using_L2 and _calculate_relative_distance."""
    N, C, H, W = I.size()
    if distance == "cosine":
        mean_T = T.mean(dim=(0, 2, 3), keepdim=True)
        I, T = F.normalize(I - mean_T, p=2, dim=1), F.normalize(T - mean_T, p=2, dim=1)
        dist = []
        for i in range(N):
            Ti = T[i].view(1, 1, C, H * W).permute(3, 2, 0, 1).contiguous()
            dist.append(F.conv2d(I[i].unsqueeze(0), Ti).permute(0, 2, 3, 1).contiguous())
        raw = ((1 - torch.cat(dist, 0)) / 2).clamp(min=0.0)
    else:
        Iv, Tv = I.view(N, C, -1), T.view(N, C, -1)
        sI, sT = torch.sum(Iv * Iv, 1), torch.sum(Tv * Tv, 1)
        raw = torch.cat([(sI[i].view(-1, 1) + sT[i].view(1, -1) - 2 * Iv[i].permute(1, 0) @ Tv[i]).view(1, H, W, H * W)
                         for i in range(N)], 0).clamp(0.0)
    rel = raw / (torch.min(raw, dim=-1, keepdim=True)[0] + 1e-5)
    w = torch.exp((b - rel) / band_width)
    cx = w / torch.sum(w, dim=-1, keepdim=True)
    return torch.mean(-torch.log(torch.mean(torch.max(torch.max(cx, dim=1)[0], dim=1)[0], dim=1)))


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    torch.manual_seed(0)
    feats = torch_vgg19_features()
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    return str(path), feats


def _torch_vgg(feats, x, wanted):
    """Pre-activation features by torchvision index (conv3_2 = 12, conv4_2 = 21), ImageNet-normalised input."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h, out = (x - mean) / std, {}
    for i, layer in enumerate(feats[: max(wanted) + 1]):
        h = layer(h)
        if i in wanted:
            out[i] = h
    return out


@pytest.mark.parametrize("distance,calc_type", [("cosine", "regular"), ("l2", "regular"), ("cosine", "symmetric")])
def test_contextual_equals_traiNNer_redux_on_vgg19_features(vgg, distance, calc_type):
    path, feats = vgg
    sr, gt, _ = _photos(48, 48)
    cx = ContextualLoss(path, distance=distance, calc_type=calc_type, band_width=0.5 if distance == "cosine" else 0.1)
    ts = _t(sr, grad=True)
    fs, fg = _torch_vgg(feats, ts, (12, 21)), _torch_vgg(feats, _t(gt), (12, 21))
    fg = {k: v.detach() for k, v in fg.items()}
    bw = cx.opts["band_width"]
    pair = lambda i: traiNNer_cx(fs[i], fg[i], distance, band_width=bw)  # noqa: E731
    if calc_type == "symmetric":
        pair = lambda i: (traiNNer_cx(fg[i], fs[i], distance, band_width=bw) + traiNNer_cx(fs[i], fg[i], distance, band_width=bw)) / 2  # noqa: E731
    ref = pair(12) + pair(21)
    ref.backward()
    ours, g = jax.jit(jax.value_and_grad(lambda a, b, p: cx(a, b, p)))(jnp.asarray(sr), jnp.asarray(gt), cx.params)
    assert float(ours) == pytest.approx(ref.item(), rel=1e-4)
    assert _rel(g, _nhwc(ts.grad)) <= 1e-3
    same = float(cx(jnp.asarray(gt), jnp.asarray(gt)))
    assert same < float(ours)  # lowest where SR is GT (not 0: CX of a set with itself is below 1)


def test_contextual_in_the_objective_passes_its_vgg_weights_and_refuses_large_maps(vgg):
    path, _ = vgg
    sr, gt, _ = (jnp.asarray(a) for a in _photos(32, 32))
    ls = build_losses([{"name": "contextual", "vgg_weights": path, "layer_weights": {"conv4_2": 1.0}, "key": "cx"}])
    assert set(ls.feature_params) == {"cx"}
    total, logs = jax.jit(lambda a, b, fp: ls(a, b, feature_params=fp))(sr, gt, ls.feature_params)
    assert float(total) == pytest.approx(float(ls.terms[0].fn(sr, gt)), rel=1e-6)
    small = ContextualLoss(path, layer_weights={"conv1_1": 1.0}, max_1d_size=16)
    with pytest.raises(ValueError, match="max_1d_size"):
        small(sr, gt)
