"""TOPIQ-FR against pyiqa 0.1.16's own module (CFANet, `topiq_fr`) on real photographs, with every weight off its
initial value: tests/golden/topiq/recipe.py draws a full weight set from a seed (numpy only), the test writes it as a
.pth in pyiqa's release layout and compares jaxsr's scores with what pyiqa's module gave on the same file and images
(tests/golden/topiq/expected.json, made by make_golden.py there: pyiqa is not installed for the tests). And the
refusals: missing files, other networks, other TOPIQs, code in the pickle."""
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
from conftest import photo

from jaxsr.errors import WeightsError
from jaxsr.topiq import _adaptive_pool_matrix, _bicubic_matrix, features, load_topiq, read_topiq
from jaxsr.weights import write_pth

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "topiq")
sys.path.insert(0, GOLDEN)
import make_golden  # noqa: E402  (its digests; it imports no torch or pyiqa until run)
import recipe  # noqa: E402

TOL = 1e-5  # absolute, on scores of order 0.1-1


@pytest.fixture(scope="module")
def expected():
    with open(os.path.join(GOLDEN, "expected.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(state dict, its .pth as pyiqa releases it: {'params': state dict})."""
    sd = recipe.state_dict()
    path = tmp_path_factory.mktemp("topiq") / "cfanet_fr_kadid_res50.pth"
    write_pth(path, sd, wrapper="params")
    return sd, str(path)


@pytest.fixture(scope="module")
def topiq(weights):
    return load_topiq(weights[1])


def test_the_weights_and_images_are_the_ones_pyiqa_scored(weights, expected):
    """Otherwise a mismatch below would be the recipe's drift (numpy, scikit-image), not jaxsr's."""
    assert make_golden.weights_digest(weights[0]) == expected["weights_sha256"], "recipe.state_dict() changed: rerun make_golden.py"
    for name, dist, ref in recipe.pairs():
        assert [make_golden.image_digest(dist), make_golden.image_digest(ref)] == expected["inputs_sha256_8bit"][name], name


def test_topiq_equals_pyiqa(topiq, expected):
    diffs, got_all = [], {}
    for name, dist, ref in recipe.pairs():
        got, want = topiq(dist, ref), expected["scores"][name]
        diffs.append(abs(got - want))
        got_all[name] = got
        print(f"{name:28s} {dist.shape[0]}x{dist.shape[1]}  jaxsr {got:.7f}  pyiqa {want:.7f}  |diff| {abs(got - want):.1e}")
        assert abs(got - want) <= TOL, (name, got, want)
    print("max |jaxsr - pyiqa topiq_fr|:", max(diffs))
    assert topiq.net == "topiq_fr"
    # the scores tell the pairs apart by far more than the tolerance (so a wrong branch cannot pass): the distortion,
    # the order of the two images (distorted first), each size
    want = expected["scores"]
    assert abs(want["astronaut_blur_noise"] - want["astronaut_identical"]) > 100 * TOL
    assert abs(want["astronaut_blur_noise"] - want["astronaut_swapped"]) > 100 * TOL
    assert len({round(v, 3) for v in want.values()}) == len(want)


def test_backbone_levels_equal_pyiqa(weights, expected):
    """timm's resnet50 taps (stem ReLU, layer1..layer4) of the first pair's reference, value by value."""
    _, dist, ref = recipe.pairs()[0]
    levels = features(read_topiq(weights[1]), dist, ref)
    assert [tuple(f.shape) for f in levels] == [(2, 32, 32, 64), (2, 16, 16, 256), (2, 8, 8, 512), (2, 4, 4, 1024), (2, 2, 2, 2048)]
    got = [float(levels[lv][1, y, x, c]) for lv, y, x, c in expected["probe_at"]]
    np.testing.assert_allclose(got, expected["probes"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([float(f[1].mean()) for f in levels], expected["level_means"], rtol=1e-5)
    assert min(abs(v) for v in expected["probes"]) > 1e-3  # no probe sits on a ReLU's zero


def test_resizing_equals_torch():
    """The position embedding's bicubic resize and the adaptive pooling, against torch itself (where installed)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 2, 32, 32)).astype(np.float32))
    for h, w in ((1, 1), (2, 2), (3, 3), (5, 1), (3, 4), (17, 9), (32, 32), (48, 70)):
        want = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).numpy()
        got = np.einsum("oh,nchw,pw->ncop", _bicubic_matrix(32, h), x.numpy(), _bicubic_matrix(32, w))
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"bicubic 32x32 -> {h}x{w}")
    y = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 2, 38, 42)).astype(np.float32))
    for h, w in ((3, 3), (5, 6), (38, 42), (1, 1), (7, 11)):
        want = F.adaptive_avg_pool2d(y, (h, w)).numpy()
        got = np.einsum("oh,nchw,pw->ncop", _adaptive_pool_matrix(38, h), y.numpy(), _adaptive_pool_matrix(42, w))
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"adaptive pool 38x42 -> {h}x{w}")


def _small(tmp_path, name, sd):
    write_pth(tmp_path / name, sd)
    return str(tmp_path / name)


def test_refuses_missing_and_wrong_files(weights, tmp_path):
    sd, _ = weights
    with pytest.raises(WeightsError, match="not found.*cfanet_fr_kadid_res50-2c4cc61d.pth"):
        load_topiq(str(tmp_path / "nope.pth"))
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    vgg = _small(tmp_path, "vgg16.pth", {"features.0.weight": z(64, 3, 3, 3), "features.0.bias": z(64)})
    with pytest.raises(WeightsError, match="holds no TOPIQ weights .*features.0.weight.*not pyiqa's CFANet"):
        load_topiq(vgg)
    nr = _small(tmp_path, "nr.pth", {"h_emb": sd["h_emb"], "weight_pool.0.splitconv.weight": z(128, 64, 1, 1),
                                     "dim_reduce.0.0.weight": z(256, 64, 1, 1)})
    with pytest.raises(WeightsError, match="no-reference TOPIQ .* full-reference TOPIQ-FR"):
        load_topiq(nr)
    swin = _small(tmp_path, "swin.pth", {"h_emb": sd["h_emb"], "dim_reduce.0.0.weight": z(256, 768, 1, 1),
                                         "semantic_model.layers.0.blocks.0.norm1.weight": z(128)})
    with pytest.raises(WeightsError, match="another backbone than ResNet50"):
        load_topiq(swin)
    base = {k: sd[k] for k in ("h_emb", "w_emb", "dim_reduce.0.0.weight")}
    odd = _small(tmp_path, "odd.pth", {**base, "semantic_model.conv1.weight": z(64, 3, 3, 3)})
    with pytest.raises(WeightsError, match=r"semantic_model.conv1.weight is \(64, 3, 3, 3\), TOPIQ-FR has \(64, 3, 7, 7\)"):
        load_topiq(odd)
    short = _small(tmp_path, "short.pth", {**base, "semantic_model.conv1.weight": sd["semantic_model.conv1.weight"]})
    with pytest.raises(WeightsError, match="semantic_model.bn1.weight missing, not pyiqa's TOPIQ-FR"):
        load_topiq(short)
    # a whole file but for the head: two classes (another configuration of CFANet)
    write_pth(tmp_path / "two.pth", {**sd, "score_linear.6.weight": z(2, 256), "score_linear.6.bias": z(2)}, wrapper="params")
    with pytest.raises(WeightsError, match=r"score_linear.6.weight is \(2, 256\), TOPIQ-FR has \(1, 256\)"):
        load_topiq(str(tmp_path / "two.pth"))
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        load_topiq(str(tmp_path / "text.pth"))


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_and_never_runs(weights, tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"params": {"h_emb": 0}, "x": _Hostile(marker)}, protocol=2))
    with pytest.raises(WeightsError, match="refusing to unpickle"):
        load_topiq(str(path))
    assert not marker.exists()


def test_images_of_two_shapes_are_refused(topiq):
    with pytest.raises(ValueError, match="one shape"):
        topiq(photo("chelsea", 64, 64), photo("chelsea", 64, 72))


def test_evaluate_reports_topiq_as_a_column(weights, tmp_path, capsys):
    from test_evaluate import tiny_model

    from jaxsr.evaluate import main
    from jaxsr.imageio import write_image

    tiny_model(tmp_path / "m.pth")
    (tmp_path / "hr").mkdir()
    write_image(tmp_path / "hr" / "a.png", photo("astronaut", 64, 64, top=60, left=160))
    assert main(["--weights", str(tmp_path / "m.pth"), "--hr", str(tmp_path / "hr"), "--out", str(tmp_path / "r"),
                 "--topiq", weights[1]]) == 0
    header, *lines = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert header == "image,model,psnr,ssim,topiq" and all(np.isfinite(float(line.split(",")[-1])) for line in lines)
    assert " TOPIQ " in capsys.readouterr().out
    assert main(["--weights", str(tmp_path / "m.pth"), "--hr", str(tmp_path / "hr"), "--topiq", str(tmp_path / "no.pth")]) == 2
    assert "error: TOPIQ weights file" in capsys.readouterr().err


def _val_config(**val):
    from jaxsr.recipes import demo
    from jaxsr.train.config import resolve

    c = demo.get_config()
    c.val.update(every=0, at_start=False, **val)
    return resolve(c)


def test_validation_takes_topiq_and_best_k_follows_its_highest(weights, tmp_path):
    from conftest import cli
    from test_workflow import TINY

    from jaxsr import evaluate
    from jaxsr.errors import ConfigError
    from jaxsr.train import kinds

    assert "topiq" in evaluate.METRICS and "topiq" not in evaluate.LOWER_IS_BETTER  # a quality score: best-k takes the highest
    with pytest.raises(ConfigError, match=r"val.best_metric='topiq' needs its weight files in val.topiq \(one path"):
        _val_config(best_metric="topiq")
    with pytest.raises(ConfigError, match="val.topiq must be a string"):  # one file
        _val_config(topiq=(weights[1], weights[1]))
    sr = kinds.get("sr")
    vgg = _small(tmp_path, "vgg.pth", {"features.0.weight": np.zeros(3, np.float32)})
    with pytest.raises(WeightsError, match="holds no TOPIQ weights"):
        sr.check(_val_config(topiq=vgg))
    cfg = _val_config(topiq=weights[1], best_metric="topiq")
    sr.check(cfg)
    assert set(evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)) == {"topiq"}
    # --print_config refuses a missing file in one line, as it does LPIPS's and DISTS's
    code, out, err = cli(*TINY, f"--config.val.topiq={tmp_path / 'missing.pth'}", "--print_config")
    assert code == 2 and not out and err.count("\n") == 1 and "TOPIQ weights file" in err and "not found" in err, err
