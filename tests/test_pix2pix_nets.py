"""The pix2pix / CycleGAN networks against the reference modules' own outputs (tests/golden/pix2pix, made by its
make_golden.py from junyanz's networks.py and traiNNer's port on perturbed weights): U-Net and ResNet generators (batch,
instance and no norm; ConvTranspose and traiNNer's upconv; dropout; zero padding), the basic / n_layers / pixel
PatchGANs; an old InstanceNorm file; exports bit for bit; refusals by name; the reference's init_weights against
torch's; upscale's [0, 1] <-> [-1, 1] mapping; the warm start with model.arch=auto."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr import archs, load_model, upscale, weights
from jaxsr.archs import pix2pix
from jaxsr.errors import WeightsError

pytestmark = pytest.mark.filterwarnings("ignore:spandrel/chaiNNer have no pix2pix/CycleGAN")  # the exports' known gap
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "pix2pix")
TOL = 1e-5  # fp32, max abs diff on [-1, 1] images and logits (measured: <= 6.6e-6, InstanceNorm ResNets; others <= 2.2e-6)
GENERATORS = {  # file -> (input, arch, spec fields the keys give)
    "unet_batch": ("x64x64", "p2p_unet", dict(ngf=3, num_downs=6, norm="batch", upsample_mode="deconv")),
    "unet_instance": ("x32x64", "p2p_unet", dict(out_ch=2, ngf=4, num_downs=5, norm="instance", upsample_mode="deconv")),
    "unet_instance_upconv": ("x32x64", "p2p_unet", dict(ngf=4, num_downs=5, norm="instance", upsample_mode="upconv")),
    "resnet_instance": ("x30x35", "p2p_resnet", dict(ngf=4, n_blocks=2, norm="instance", upsample_mode="deconv")),
    "resnet_instance_pre04": ("x30x35", "p2p_resnet", dict(ngf=4, n_blocks=2, norm="instance", upsample_mode="deconv")),
    "resnet_instance_upconv": ("x30x35", "p2p_resnet", dict(ngf=4, n_blocks=2, norm="instance", upsample_mode="upconv")),
    "resnet_batch_dropout": ("x30x35", "p2p_resnet", dict(ngf=4, n_blocks=1, norm="batch", use_dropout=True)),
    "resnet_none_zero": ("x30x35", "p2p_resnet", dict(ngf=4, n_blocks=1, norm="none", padding_type="zero")),
}
DISCRIMINATORS = {
    "d_basic_batch": ("x37x45", dict(net="n_layers", in_ch=3, ndf=4, n_layers=3, norm="batch")),
    "d_nlayers4_instance": ("x48x56", dict(net="n_layers", in_ch=6, ndf=4, n_layers=4, norm="instance")),
    "d_pixel_batch": ("x37x45", dict(net="pixel", in_ch=3, ndf=4, n_layers=3, norm="batch")),
    "d_nlayers2_none": ("x37x45", dict(net="n_layers", in_ch=3, ndf=4, n_layers=2, norm="none")),
}


def golden(case):
    return os.path.join(GOLDEN, f"{case}.pth")


@pytest.fixture(scope="module")
def data():
    return np.load(os.path.join(GOLDEN, "inputs.npz")), np.load(os.path.join(GOLDEN, "outputs.npz"))


def _close(model, x, want):
    got = np.asarray(model(jnp.asarray(x)))
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("case", sorted(GENERATORS))
def test_generator_golden_file_loads_and_equals_the_reference(data, case):
    """load_model and weights.read(arch='auto') give the reference's output; the pre-0.4 file (InstanceNorm running
    statistics) is resnet_instance's weights and output; *_train: batch statistics under model.train()."""
    key, arch, fields = GENERATORS[case]
    inputs, outputs = data
    want = outputs[case.replace("_pre04", "")]
    model, info = load_model(golden(case))
    assert info["arch"] == arch and info["scale"] == 1
    assert fields.items() <= info["hyperparameters"].items()
    assert model.value_range == (-1.0, 1.0) and model.scale == 1
    w = weights.read(golden(case), arch="auto")
    again, report = w.build()
    assert report.ok and w.arch is archs.get(arch)
    for m in (model, again):
        _close(m, inputs[key], want)
    if case + "_train" in outputs:  # the reference's reference ran with dropout off
        model.train()
        model.set_attributes(deterministic=True)
        _close(model, inputs[key], outputs[case + "_train"])


@pytest.mark.parametrize("case", sorted(DISCRIMINATORS))
def test_discriminator_golden_file_loads_and_equals_the_reference(data, case):
    key, spec = DISCRIMINATORS[case]
    inputs, outputs = data
    w = weights.read(golden(case), arch="auto", kind="discriminator")
    assert w.arch is archs.get("patchgan") and w.spec == {"arch": "patchgan", **spec}
    model, report = w.build()
    assert report.ok
    if case + "_train" in outputs:  # built in training mode, as the reference trains it
        _close(model, inputs[key], outputs[case + "_train"])
    model, _ = w.build()  # running statistics as in the file (the forward above moved them, as torch's does)
    model.eval()
    _close(model, inputs[key], outputs[case])


@pytest.mark.parametrize("case", sorted(GENERATORS) + sorted(DISCRIMINATORS))
def test_export_is_the_reference_file_bit_for_bit(tmp_path, case):
    """The loaded model's .pth has the committed file's keys, dtypes and bytes (a plain state dict), so the reference
    module strict-loads it; the old InstanceNorm file exports as today's layout (resnet_instance's file)."""
    kind = "discriminator" if case in DISCRIMINATORS else "generator"
    w = weights.read(golden(case), kind=kind)
    model, _ = w.build()
    weights.export(model, w.spec, tmp_path / "out.pth")
    mine, _ = weights.read_file(tmp_path / "out.pth")
    theirs, _ = weights.read_file(golden(case.replace("_pre04", "")))
    assert not any(k in ("params", "params_ema") for k in theirs)
    assert mine.keys() == theirs.keys()
    for k in theirs:
        assert mine[k].dtype == theirs[k].dtype and mine[k].tobytes() == theirs[k].tobytes(), k


def test_the_old_instance_norm_file_holds_the_statistics_the_loader_drops():
    old, _ = weights.read_state_dict(golden("resnet_instance_pre04"))
    new, _ = weights.read_state_dict(golden("resnet_instance"))
    extra = sorted(set(old) - set(new))
    assert extra and all(k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked") for k in extra)
    assert pix2pix.drop_instance_stats(old).keys() == new.keys()


def _sd(case):
    return dict(weights.read_state_dict(golden(case))[0])


def test_refusals_name_what_cannot_be_loaded(tmp_path, data):
    from jaxsr.archs import p2p_resnet, p2p_unet, patchgan

    sd = _sd("unet_instance")
    bad = {k.replace("model.model.1.model.3.model.3.model.3.", "model.model.1.model.3.model.3.model.9."): v
           for k, v in sd.items()}
    with pytest.raises(WeightsError, match="unsupported U-Net generator: .* levels"):
        p2p_unet.infer_spec(bad)
    sd = _sd("resnet_instance")
    with pytest.raises(WeightsError, match=r"no upsampling conv at model\.12"):
        p2p_resnet.infer_spec({k: v for k, v in sd.items() if not k.startswith("model.12.")})
    sd = _sd("d_basic_batch")
    sd["model.5.weight"] = np.zeros((5, 8, 4, 4), np.float32)
    with pytest.raises(WeightsError, match=r"unsupported NLayerDiscriminator: widths"):
        patchgan.infer_spec(sd)
    with pytest.raises(WeightsError, match="PatchGAN discriminator .*, not a generator"):
        weights.read(golden("d_basic_batch"))
    with pytest.raises(WeightsError, match="expected a pix2pix U-Net generator .* but the file is a pix2pix/CycleGAN ResNet"):
        weights.read(golden("resnet_instance"), arch="p2p_unet")
    model, _ = load_model(golden("unet_instance"))
    with pytest.raises(ValueError, match="multiples of 32, not 30x35"):
        model(jnp.asarray(data[0]["x30x35"]))


def test_upscale_maps_zero_one_images_to_the_generators_range(data):
    """jaxsr.infer.upscale takes and gives [0, 1] images; the generator sees 2x - 1 and its output is mapped back; the
    U-Net's input is padded to its multiple (32) and cropped back."""
    model, _ = load_model(golden("unet_instance_upconv"))
    x = (data[0]["x30x35"][0] + 1) / 2
    got = upscale(model, x)
    assert got.shape == x.shape
    model_r, _ = load_model(golden("resnet_instance"))
    x = (data[0]["x30x35"][0, :28, :32] + 1) / 2
    want = (np.asarray(model_r(jnp.asarray(2 * x[None] - 1)))[0] + 1) / 2
    # two programs of one model: fp32 rounding only (1.7e-6 measured on an AMD EPYC, under 1e-6 elsewhere); a wrong
    # range mapping or crop is off by 1e-3 or more
    assert np.abs(upscale(model_r, x) - want).max() <= 1e-5


def test_init_weights_draws_as_torch_does():
    """The reference's init_weights: per init_type the weight statistics of torch's init on the same (torch-layout)
    shapes (different RNGs, so statistics, not values); orthogonal rows orthonormal times the gain; biases 0 and
    BatchNorm weights N(1, gain) on a built network."""
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(0)
    torch.manual_seed(0)
    for shape in [(64, 32, 4, 4), (32, 16, 3, 3)]:
        for init_type, gain in [("normal", 0.02), ("xavier", 0.02), ("kaiming", 0.02), ("orthogonal", 0.5)]:
            t = torch.empty(shape)
            {"normal": lambda: torch.nn.init.normal_(t, 0.0, gain),
             "xavier": lambda: torch.nn.init.xavier_normal_(t, gain=gain),
             "kaiming": lambda: torch.nn.init.kaiming_normal_(t, a=0, mode="fan_in"),
             "orthogonal": lambda: torch.nn.init.orthogonal_(t, gain=gain)}[init_type]()
            t = t.numpy()
            ours = pix2pix.sample(g, init_type, shape, gain)
            assert ours.shape == t.shape
            assert abs(ours.std() / t.std() - 1) < 0.06, (init_type, shape)  # ~4 sigma for 4608 draws
            assert abs(ours.mean()) < 0.05 * t.std()
            if init_type == "orthogonal":
                flat = ours.reshape(shape[0], -1)
                assert np.allclose(flat @ flat.T, gain**2 * np.eye(shape[0]), atol=1e-5)
    with pytest.raises(ValueError, match="init_type must be one of normal, xavier, kaiming, orthogonal"):
        pix2pix.sample(g, "uniform", (2, 2), 1.0)
    from flax import nnx

    model = archs.build({"arch": "patchgan", "ndf": 16, "n_layers": 3, "norm": "batch"}, rngs=nnx.Rngs(1))
    pix2pix.init_weights(model, "normal", 0.02, seed=3)
    bn = np.concatenate([np.asarray(model.model[i].scale[...]) for i in (3, 6, 9)])
    assert abs(bn.mean() - 1) < 0.01 and abs(bn.std() - 0.02) < 0.005
    w = np.asarray(model.model[5].kernel[...])
    assert abs(w.std() - 0.02) < 0.001 and np.all(np.asarray(model.model[0].bias[...]) == 0)


def test_auto_arch_from_the_golden_file_resolves_in_print_config():
    r = subprocess.run([sys.executable, "run_train.py", "--config", "configs/x4.py", "--config.model.arch=auto",
                        f"--config.init_weights={golden('resnet_instance_upconv')}", "--config.scale=1", "--print_config"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["scale"] == 1 and cfg["model"] == {
        "arch": "p2p_resnet", "in_ch": 3, "out_ch": 3, "ngf": 4, "n_blocks": 2, "norm": "instance", "use_dropout": False,
        "padding_type": "reflect", "upsample_mode": "upconv"}
