"""White-box Cartoonization: the wbcunet generator and the guided filter against victorca25/traiNNer's own modules
(tests/golden/wbc, made by its make_golden.py on perturbed nf=4 weights and photo crops), the guided filter's original
(TF) borders against the definition, its gradients, jaxsr.infer's guided filter on the output, and the surface and
texture representations against the port's."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr import archs, infer, load_model, upscale, weights
from jaxsr.archs import bridge, wbcunet
from jaxsr.errors import WeightsError
from jaxsr.guided_filter import guided_filter
from jaxsr.imageio import load_image, write_image
from jaxsr.train.kinds import wbc_representations as reps

pytestmark = pytest.mark.filterwarnings("ignore:spandrel/chaiNNer have no White-box")  # the exports' known gap
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "wbc")
PTH = os.path.join(GOLDEN, "wbcunet.pth")
TOL = 1e-5  # fp32 max abs diff on [-1, 1] images (measured: generator <= 1.1e-6, guided filter <= 3.3e-6)
SETTINGS = ((1, 5e-3), (5, 2e-1))  # the original's inference and surface-representation filters


@pytest.fixture(scope="module")
def data():
    return dict(np.load(os.path.join(GOLDEN, "golden.npz")))


def _diff(model, x, want):
    got = np.asarray(model(jnp.asarray(x)))
    assert got.shape == want.shape
    return float(np.abs(got - want).max())


def test_golden_file_loads_and_equals_the_reference_in_both_modes(data):
    """load_model and weights.read(arch='auto') give the port's output ('pt', the default); the same weights built
    with mode='tf' give the port's mode='tf' output."""
    model, info = load_model(PTH)
    assert info["arch"] == "wbcunet" and info["scale"] == 1
    assert {"nf": 4, "num_blocks": 4, "mode": "pt"}.items() <= info["hyperparameters"].items()
    assert model.value_range == (-1.0, 1.0) and model.size_multiple == 4 and model.guided_filter == (1, 5e-3)
    w = weights.read(PTH, arch="auto")
    again, report = w.build()
    assert report.ok and w.arch is archs.get("wbcunet")
    for m in (model, again):
        assert _diff(m, data["x"], data["y_pt"]) <= TOL
    tf, report = w.build({**w.spec, "mode": "tf"})
    assert report.ok and _diff(tf, data["x"], data["y_tf"]) <= TOL
    assert np.abs(data["y_tf"] - data["y_pt"]).max() > 100 * TOL  # the modes differ: each comparison tells them apart


def test_export_is_the_reference_file_bit_for_bit(tmp_path):
    w = weights.read(PTH)
    model, _ = w.build()
    with pytest.warns(UserWarning, match="UnetGeneratorWBC .*strict.* load it"):
        weights.export(model, w.spec, tmp_path / "out.pth")
    mine, _ = weights.read_file(tmp_path / "out.pth")
    theirs, _ = weights.read_file(PTH)
    assert not any(k in ("params", "params_ema") for k in theirs)
    assert mine.keys() == theirs.keys()
    for k in theirs:
        assert mine[k].dtype == theirs[k].dtype and mine[k].tobytes() == theirs[k].tobytes(), k


def test_widths_and_depth_come_from_the_keys_and_refusals_name_what_cannot_load(data):
    sd = dict(weights.read_state_dict(PTH)[0])
    less = {k: v for k, v in sd.items() if not k.startswith(("block_2.", "block_3."))}
    assert wbcunet.infer_spec(less)["num_blocks"] == 2
    assert "four residual blocks, this model has 2" in archs.get("wbcunet").spandrel_warnings(wbcunet.infer_spec(less))[0]
    non_unet = {"conv.weight": sd["conv.weight"], "conv_1.weight": sd["conv_1.weight"], "conv_9.weight": sd["conv_9.weight"],
                "resblock.0.conv1.weight": sd["block_0.conv1.weight"], "conv2d_transpose_1.weight": sd["conv_5.weight"]}
    assert wbcunet.detect(non_unet)
    with pytest.raises(WeightsError, match="non-U-Net GeneratorWBC"):
        wbcunet.infer_spec(non_unet)
    bad = {**sd, "conv_4.weight": np.zeros((12, 8, 3, 3), np.float32)}
    with pytest.raises(WeightsError, match=r"unsupported WBC U-Net: conv_4 not as UnetGeneratorWBC\(nf=4\) with 4 blocks"):
        wbcunet.infer_spec(bad)
    with pytest.raises(WeightsError, match="expected a pix2pix U-Net generator .* but the file is a White-box"):
        weights.read(PTH, arch="p2p_unet")
    model, _ = load_model(PTH)
    with pytest.raises(ValueError, match="multiples of 4, not 34x44"):
        model(jnp.asarray(data["x"][:, :34]))


@pytest.mark.parametrize("r,eps", SETTINGS)
def test_guided_filter_equals_the_ports_with_reflection_and_the_originals_definition(data, r, eps):
    """'reflect': the port's filters.guided_filter (golden). 'valid' (the default): the original's TF box filter, a
    zero-padded sum divided by the count, i.e. every mean taken over the window's pixels inside the image, computed
    here by the definition, pixel by pixel."""
    x, g = data["g"], data["x"]
    got = np.asarray(guided_filter(x, g, r, eps, border="reflect"))
    assert np.abs(got - data[f"gf_r{r}"]).max() <= TOL
    h, w = x.shape[1:3]

    def mean(t):
        out = np.zeros_like(t, dtype=np.float64)
        for i in range(h):
            for j in range(w):
                out[:, i, j] = t[:, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].mean(axis=(1, 2))
        return out

    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    mg, mx = mean(g64), mean(x64)
    a = (mean(g64 * x64) - mg * mx) / (mean(g64 * g64) - mg * mg + eps)
    want = mean(a) * g64 + mean(mx - a * mg)
    valid = np.asarray(guided_filter(x, g, r, eps))
    assert np.abs(valid - want).max() <= TOL
    inner = (slice(None), slice(2 * r, h - 2 * r), slice(2 * r, w - 2 * r))
    assert np.abs(valid[inner] - got[inner]).max() <= TOL  # the borders are the only difference
    assert np.abs(valid - got).max() > 100 * TOL


def test_guided_filter_is_differentiable_and_refuses_bad_arguments(data):
    """jax.grad through both inputs agrees with central differences (float32, step 1e-2 on [-1, 1] images)."""
    x, g = jnp.asarray(data["g"][:, :12, :14]), jnp.asarray(data["x"][:, :12, :14])
    w = jnp.asarray(np.random.default_rng(0).normal(size=x.shape).astype(np.float32))
    for border in ("valid", "reflect"):
        f = jax.jit(lambda a, b: jnp.sum(w * guided_filter(a, b, 2, 5e-2, border=border)))  # noqa: B023
        gx, gg = jax.grad(f, argnums=(0, 1))(x, g)
        assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gg)) and float(jnp.abs(gg).max()) > 0
        for arr, grad, which in ((x, gx, 0), (g, gg, 1)):
            for idx in ((0, 0, 0, 0), (0, 5, 7, 1), (0, 11, 13, 2)):
                e = jnp.zeros_like(arr).at[idx].set(1e-2)
                args = [x, g]
                args[which] = arr + e
                hi = f(*args)
                args[which] = arr - e
                num = (hi - f(*args)) / 2e-2
                assert abs(float(num) - float(grad[idx])) <= 2e-2 * max(1.0, abs(float(num))), (border, which, idx)
    with pytest.raises(ValueError, match="border: one of"):
        guided_filter(x, g, 1, 1e-2, border="zero")
    with pytest.raises(ValueError, match="radius r=12 .* below the sides"):
        guided_filter(x, g, 12, 1e-2, border="reflect")


def test_upscale_filters_the_output_with_the_input_as_guide(data):
    """As the original's cartoonize.py: the generator on 2x - 1, the guided filter (r=1, eps=5e-3) on its output with
    that input as guide, then back to [0, 1] and clipped; compared with the reference's own output, filtered. A
    model's guided_filter of None gives the bare output; other settings are used as given."""
    model, _ = load_model(PTH)
    x01 = (data["x"][0] + 1) / 2
    ref = jnp.asarray(data["y_pt"])
    for setting in ((1, 5e-3), (5, 2e-1), None):
        model.guided_filter = setting
        want = ref if setting is None else guided_filter(ref, jnp.asarray(data["x"]), *setting)
        want = np.clip((np.asarray(want)[0] + 1) / 2, 0, 1)
        assert np.abs(upscale(model, x01) - want).max() <= TOL, setting


def test_infer_command_takes_guided_filter_settings_and_refuses_them_for_other_models(tmp_path, data, capsys):
    src, out = tmp_path / "photo.png", tmp_path / "out.png"
    write_image(src, (data["x"][0] + 1) / 2)
    x = jnp.asarray(2 * load_image(src)[0][None] - 1)
    model, _ = load_model(PTH)
    y = np.asarray(model(x))
    for flag, want in ((["--guided-filter", "off"], y), ([], guided_filter(y, x, 1, 5e-3)),
                       (["--guided-filter", "5,0.2"], guided_filter(y, x, 5, 0.2))):
        assert infer.main(["--weights", PTH, "--input", str(src), "--output", str(out), "--tile", "0", *flag]) == 0
        want = np.clip((np.asarray(want)[0] + 1) / 2, 0, 1)
        assert np.abs(load_image(out)[0] - want).max() <= 1 / 255 + 1e-6, flag
    other = os.path.join(ROOT, "tests", "golden", "pix2pix", "resnet_instance.pth")
    assert infer.main(["--weights", other, "--input", str(src), "--output", str(out), "--guided-filter", "1,5e-3"]) == 2
    assert "--guided-filter applies to White-box Cartoonization generators" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        infer.main(["--weights", PTH, "--input", str(src), "--output", str(out), "--guided-filter", "1"])
    assert "takes R,EPS" in capsys.readouterr().err


def test_infer_cartoonizes_a_whole_photograph(tmp_path):
    """jaxsr.infer on a full 512x512 photograph (skimage's astronaut), default settings: the generator, then the guided
    filter (1, 5e-3) with the input as guide, equal to upscale on the whole image."""
    import skimage.data

    src, out = tmp_path / "astronaut.png", tmp_path / "cartoon.png"
    write_image(src, skimage.data.astronaut().astype(np.float32) / 255)
    assert infer.main(["--weights", PTH, "--input", str(src), "--output", str(out)]) == 0
    model, _ = load_model(PTH)
    got, whole = load_image(out)[0], upscale(model, load_image(src)[0])
    assert got.shape == (512, 512, 3) and np.abs(got - whole).max() <= 1 / 255 + 1e-6
    model.guided_filter = None
    assert np.abs(upscale(model, load_image(src)[0]) - whole).max() > 1 / 255  # the filter acted


def test_auto_arch_from_the_golden_file_resolves_in_print_config():
    r = subprocess.run([sys.executable, "run_train.py", "--config", "configs/x4.py", "--config.model.arch=auto",
                        f"--config.init_weights={PTH}", "--config.scale=1", "--print_config"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == {"arch": "wbcunet", "in_ch": 3, "out_ch": 3, "nf": 4, "num_blocks": 4,
                                              "mode": "pt"}


def test_surface_and_texture_representations_equal_the_ports(data):
    """surface: the port's GuidedFilter(r=5, eps=2e-1) of an image with itself as guide; texture: its color_shift with
    the same drawn weights (one gray channel; Y=False and Y=True with alpha 0.8)."""
    assert np.abs(np.asarray(reps.surface(jnp.asarray(data["g"]))) - data["surface"]).max() <= TOL
    for name, y in (("cs", False), ("cs_y", True)):
        for k in ("x", "g"):
            got = np.asarray(reps.color_shift(jnp.asarray(data[k]), jnp.asarray(data[f"{name}_weights"]), y=y))
            assert got.shape == data[f"{name}_{k}"].shape and np.abs(got - data[f"{name}_{k}"]).max() <= 1e-6


def test_colour_shift_draws_follow_the_reference_distributions():
    """The port's get_colorshift_weights (and the original's color_shift): per-channel ranges (uniform) and moments
    (normal) over 4000 draws; different keys draw differently."""
    keys = jax.random.split(jax.random.key(0), 4000)
    u = np.asarray(jax.vmap(reps.colorshift_weights)(keys))
    lo, hi = np.array([0.199, 0.487, 0.014]), np.array([0.399, 0.687, 0.214])
    assert np.all(u >= lo) and np.all(u <= hi) and np.allclose(u.mean(0), (lo + hi) / 2, atol=0.005)
    n = np.asarray(jax.vmap(lambda k: reps.colorshift_weights(k, "normal"))(keys))
    assert np.allclose(n.mean(0), [0.299, 0.587, 0.114], atol=0.01) and np.allclose(n.std(0), 0.1, atol=0.01)
    uy = np.asarray(jax.vmap(lambda k: reps.colorshift_weights(k, "uniform", True))(keys))
    assert uy.min() >= -1 and uy.max() <= 1 and np.allclose(uy.mean(0), 0, atol=0.05)
    with pytest.raises(ValueError, match="'uniform' or 'normal'"):
        reps.colorshift_weights(keys[0], "gauss")


def test_structure_target_is_the_originals_slic_and_adaptive_colouring(data):
    """The original's simple_superpixel: SLIC labels as its call gives them (the same skimage here) and its
    label2rgb(kind='mix') colouring, on [-1, 1] (every segment its mean) and on 0..255 values (deviations on both sides
    of 20: mean, and mean/median mix)."""
    x = data["x"]
    got = reps.superpixel_target(x, n_segments=60)
    assert got.shape == x.shape and np.abs(got - data["sp_mix"]).max() <= 1e-6
    labels = data["sp_labels"]
    assert len(np.unique(labels)) > 20
    assert np.abs(reps.adaptive_colour(labels, (x[0] + 1) * 127.5) - data["sp_mix255"][0]).max() <= 1e-4
    assert np.abs(data["sp_mix255"][0] / 127.5 - 1 - data["sp_mix"][0]).max() > 1e-3  # the mix branch acted


def test_two_wbc_models_interpolate(tmp_path):
    """The guide's one model per representation, mixed: weights.interpolate of two wbcunet files of one spec gives
    (1 - alpha) A + alpha B, parameter by parameter."""
    w = weights.read(PTH)
    model, _ = w.build()
    other = tmp_path / "other.pth"
    sd = bridge.state_dict(model, native=True)
    bridge.load_state_dict(model, {k: v * 3.0 for k, v in sd.items()}, native=True)
    weights.export(model, w.spec, other)
    mixed, spec = weights.interpolate(PTH, other, 0.25)
    assert spec["arch"] == "wbcunet"
    got = bridge.state_dict(mixed, native=True)
    assert all(np.allclose(got[k], sd[k] * 1.5, rtol=1e-6, atol=1e-7) for k in sd)
