"""Discriminators against PyTorch modules written from the published architectures (BasicSR/Real-ESRGAN),
with torch's own spectral_norm and BatchNorm2d, on identical weights and power-iteration state."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from conftest import photo
from jaxsr.errors import WeightsError
from jaxsr import archs, optim, weights
from jaxsr.archs.bridge import load_state_dict, state_dict
from jaxsr.archs.unet import UNetDiscriminatorSN
from jaxsr.archs.vgg import VGGStyleDiscriminator
from jaxsr.losses.gan import feature_matching_loss
from jaxsr.train.state import merge, split


class TorchUNetD(nn.Module):
    """Real-ESRGAN UNetDiscriminatorSN, from the paper's code description (three SN downsamples, three
    bilinear x2 upsamples with skip additions, two SN 3x3 convs, a plain 3x3 conv to one channel)."""

    def __init__(self, cin, f, skip=True):
        super().__init__()
        self.skip = skip
        self.conv0 = nn.Conv2d(cin, f, 3, 1, 1)
        specs = [(f, 2 * f, 4, 2), (2 * f, 4 * f, 4, 2), (4 * f, 8 * f, 4, 2), (8 * f, 4 * f, 3, 1), (4 * f, 2 * f, 3, 1),
                 (2 * f, f, 3, 1), (f, f, 3, 1), (f, f, 3, 1)]
        for i, (a, b, k, s) in enumerate(specs, start=1):
            setattr(self, f"conv{i}", spectral_norm(nn.Conv2d(a, b, k, s, 1, bias=False)))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x, features=False):
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3))) + (x2 if self.skip else 0)
        x5 = act(self.conv5(up(x4))) + (x1 if self.skip else 0)
        x6 = act(self.conv6(up(x5))) + (x0 if self.skip else 0)
        x7 = act(self.conv7(x6))
        x8 = act(self.conv8(x7))
        out = self.conv9(x8)
        return (out, [x0, x1, x2, x3, x4, x5, x6, x7, x8]) if features else out


class TorchVGGD(nn.Module):
    """BasicSR VGGStyleDiscriminator(num_in_ch, num_feat, 128)."""

    def __init__(self, cin, f):
        super().__init__()
        self.conv0_0 = nn.Conv2d(cin, f, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(f, f, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(f)
        for i, (a, b) in enumerate([(f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f), (8 * f, 8 * f)], start=1):
            setattr(self, f"conv{i}_0", nn.Conv2d(a, b, 3, 1, 1, bias=False))
            setattr(self, f"bn{i}_0", nn.BatchNorm2d(b))
            setattr(self, f"conv{i}_1", nn.Conv2d(b, b, 4, 2, 1, bias=False))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(b))
        self.linear1 = nn.Linear(f * 8 * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)

    def forward(self, x, features=False):
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        feats = [act(self.conv0_0(x))]
        feats.append(act(self.bn0_1(self.conv0_1(feats[-1]))))
        for i in range(1, 5):
            feats.append(act(getattr(self, f"bn{i}_0")(getattr(self, f"conv{i}_0")(feats[-1]))))
            feats.append(act(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feats[-1]))))
        out = self.linear2(act(self.linear1(feats[-1].flatten(1))))
        return (out, feats) if features else out


def _batch(size, n=2):
    return np.stack([photo("astronaut", size, size, 80 + 40 * i, 120 + 30 * i) for i in range(n)])


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _randomise_bn(tm):
    g = torch.Generator().manual_seed(1)
    for m in tm.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)


def _state(tm):
    return {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}


@pytest.mark.parametrize("skip", [True, False])
def test_unet_discriminator_sn_equals_torch_spectral_norm(skip):
    torch.manual_seed(0)
    tm = TorchUNetD(3, 16, skip)
    tm.train()
    sd0 = _state(tm)
    assert {"conv1.weight_orig", "conv1.weight_u", "conv1.weight_v"} <= set(sd0) and "conv1.weight" not in sd0
    ours = UNetDiscriminatorSN(3, 16, skip_connection=skip)
    load_state_dict(ours, sd0)  # strict

    x = _batch(32)
    ys = []
    for _ in range(3):  # three training forwards: each runs one power iteration
        with torch.no_grad():
            ref = tm(_nchw(x)).numpy().transpose(0, 2, 3, 1)
        got = np.asarray(nnx_jit_call(ours, x))
        ys.append(np.abs(got - ref).max() / np.abs(ref).max())
    assert max(ys) <= 1e-5, ys
    # the power-iteration state (u, v) evolved exactly as torch's
    after_t, after_o = _state(tm), state_dict(ours)
    assert set(after_t) == set(after_o)
    for k in after_t:
        np.testing.assert_allclose(after_o[k], after_t[k], atol=2e-6, err_msg=k)
    assert not np.allclose(after_t["conv3.weight_u"], sd0["conv3.weight_u"])

    # eval mode: no power iteration, stored u and v used as they are
    tm.eval()
    ours.eval()
    with torch.no_grad():
        ref = tm(_nchw(x)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(nnx_jit_call(ours, x)), ref, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_array_equal(state_dict(ours)["conv3.weight_u"], after_o["conv3.weight_u"])


_forward = nnx.jit(lambda m, v: m(v))  # one cached compilation per model structure and mode


def nnx_jit_call(model, x):
    return _forward(model, jnp.asarray(x))


def test_unet_discriminator_gradients_match_torch():
    """The gradient flows through sigma = u^T W v (u, v held constant), as torch's spectral_norm does."""
    torch.manual_seed(2)
    tm = TorchUNetD(3, 8)
    ours = UNetDiscriminatorSN(3, 8)
    load_state_dict(ours, _state(tm))
    x = _batch(32, 1)
    tm.train()
    tm(_nchw(x)).mean().backward()
    grads = nnx.jit(nnx.grad(lambda m, v: m(v).mean()))(ours, jnp.asarray(x))
    g_ours = np.asarray(grads.conv2.weight_orig[...])
    g_ref = tm.conv2.weight_orig.grad.numpy()
    assert np.abs(g_ours - g_ref).max() <= 1e-5 * np.abs(g_ref).max()


def test_vgg_style_discriminator_equals_torch_and_round_trips():
    torch.manual_seed(0)
    tm = TorchVGGD(3, 8)
    _randomise_bn(tm)
    sd0 = _state(tm)
    ours = VGGStyleDiscriminator(3, 8, 128)
    load_state_dict(ours, sd0)
    x = _batch(128, 3)
    tm.train()
    with torch.no_grad():
        ref = tm(_nchw(x)).numpy()
    got = np.asarray(nnx_jit_call(ours, x))
    assert got.shape == (3, 1)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    out = state_dict(ours)
    tsd = _state(tm)
    assert set(out) == set(tsd)
    assert out["bn2_1.num_batches_tracked"].dtype == np.int64 and int(out["bn2_1.num_batches_tracked"]) == 1
    for k in tsd:  # running statistics updated as torch does (unbiased variance, momentum 0.1)
        np.testing.assert_allclose(out[k], tsd[k], rtol=1e-4, atol=1e-5, err_msg=k)
    tm.eval()
    ours.eval()
    with torch.no_grad():
        ref = tm(_nchw(x)).numpy()
    assert np.abs(np.asarray(nnx_jit_call(ours, x)) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_net_d_files_round_trip_and_mismatch_is_refused(tmp_path):
    torch.manual_seed(3)
    tm = TorchUNetD(3, 8)
    path = tmp_path / "net_d.pth"
    torch.save({"params": tm.state_dict()}, path)  # BasicSR/Real-ESRGAN wrapping
    w = weights.read(path, kind="discriminator")  # the one load path, which detects the family
    assert (w.arch.name, w.spec["num_feat"]) == ("unet", 8)
    ours, _ = w.build()
    back = state_dict(ours)
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
    # and the export loads into torch strictly
    tm2 = TorchUNetD(3, 8)
    tm2.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in back.items()}, strict=True)
    with pytest.raises(WeightsError):
        w.load_into(UNetDiscriminatorSN(3, 16))
    with pytest.raises(WeightsError, match="U-Net SN discriminator.*not a generator"):
        weights.read(path)


def test_discriminators_jit_and_bf16():
    d = UNetDiscriminatorSN(3, 8, dtype=jnp.bfloat16)
    y = nnx_jit_call(d, _batch(32, 1))
    assert y.shape == (1, 32, 32, 1) and bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))
    with pytest.raises(ValueError, match="128"):
        VGGStyleDiscriminator(3, 8, 128)(jnp.zeros((1, 64, 64, 3)))


_features = nnx.jit(lambda m, v: m(v, features=True))


def _torch_d(arch):
    torch.manual_seed(4)
    tm = TorchUNetD(3, 8) if arch == "unet" else TorchVGGD(3, 8)
    if arch == "vgg":
        _randomise_bn(tm)
    ours = UNetDiscriminatorSN(3, 8) if arch == "unet" else VGGStyleDiscriminator(3, 8, 128)
    load_state_dict(ours, _state(tm))
    return tm, ours, _batch(32 if arch == "unet" else 128, 2)


@pytest.mark.parametrize("arch", ["unet", "vgg"])
def test_discriminator_features_equal_torch_activations(arch):
    """features=True returns the logits unchanged and each block's activation as torch's module computes it (a
    training forward: one power iteration / batch statistics, as without features)."""
    tm, ours, x = _torch_d(arch)
    tm.train()
    with torch.no_grad():
        ref_logits, ref_feats = tm(_nchw(x), features=True)
    logits, feats = _features(ours, jnp.asarray(x))
    assert len(feats) == (9 if arch == "unet" else 10)
    tol = 1e-5 if arch == "unet" else 1e-4
    got = [np.asarray(logits)] + [np.asarray(f) for f in feats]
    nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1) if t.ndim == 4 else t.numpy()  # noqa: E731
    want = [nhwc(ref_logits)] + [nhwc(f) for f in ref_feats]
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and np.abs(a - b).max() <= tol * np.abs(b).max(), i
    # the default call is what it was: logits only, and state_dict keys unchanged
    tm2, ours2, _ = _torch_d(arch)
    assert np.abs(np.asarray(nnx_jit_call(ours2, x)) - got[0]).max() <= 1e-6 * np.abs(got[0]).max()
    assert set(state_dict(ours)) == set(_state(tm))


def test_feature_matching_loss_and_its_gradient_equal_victorca25():
    """victorca25/traiNNer codes/models/losses.py: sum over layers of L1(sr_feat, hr_feat.detach()) / n_layers.
    Training forwards on SR, then HR (one power iteration each), on both sides."""
    tm, ours, x = _torch_d("unet")
    tm.train()
    rng = np.random.default_rng(0)
    sr = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
    ts = _nchw(sr).requires_grad_(True)
    _, fs = tm(ts, features=True)
    _, fr = tm(_nchw(x), features=True)
    ref = sum(F.l1_loss(a, b.detach()) for a, b in zip(fs, fr)) / len(fs)
    ref.backward()
    graphdef, params, buffers = split(ours)

    def loss(s):
        d = merge(graphdef, params, buffers)
        return feature_matching_loss(d(s, features=True)[1], d(jnp.asarray(x), features=True)[1])

    value, g = jax.jit(jax.value_and_grad(loss))(jnp.asarray(sr))
    assert float(value) == pytest.approx(ref.item(), rel=1e-5)
    g_ref = ts.grad.numpy().transpose(0, 2, 3, 1)
    assert np.abs(np.asarray(g) - g_ref).max() <= 1e-4 * np.abs(g_ref).max()


@pytest.mark.parametrize("arch,k", [("unet", 3), ("vgg", 2)])
def test_freezed_gives_the_first_blocks_exactly_zero_updates(arch, k):
    _, d, x = _torch_d(arch)
    graphdef, params, buffers = split(d)
    grads = jax.jit(jax.grad(lambda p: jnp.mean(merge(graphdef, p, buffers)(jnp.asarray(x)))))(params)
    cfg = optim.default_config(lr=1e-4, ema_decay=None)  # the optim_d section
    cfg.update(clip_grad_norm=1.0, weight_decay=0.01)
    tx = optim.build_optimizer(cfg, 10, freeze=optim.frozen_blocks(archs.get(arch).block_of, k))
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    frozen = {"unet": [f"conv{i}" for i in range(k)], "vgg": ["conv0_0", "conv0_1", "bn0_1", "conv1_0", "bn1_0", "conv1_1", "bn1_1"]}[arch]
    seen = set()
    for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
        name = path[0].key
        if name in frozen:
            np.testing.assert_array_equal(np.asarray(u), 0.0)
            seen.add(name)
        else:
            assert np.abs(np.asarray(u)).min() > 0, name  # every trainable weight moves
    assert seen == set(frozen)
    with pytest.raises(ValueError, match="FreezeD"):
        optim.frozen_blocks(archs.get("esrgan").block_of, 2)  # a network without blocks FreezeD knows
