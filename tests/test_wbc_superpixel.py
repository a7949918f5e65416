"""The structure target on the device (`wbc_representations.superpixel_target_device`, a SLIC in jax.numpy) against
the installed scikit-image's slic + the host `superpixel_target`: its steps one by one (Lab, smoothing, seed grid),
then the labels and targets on photos and a made-up image with flat regions, with the similarity bounds the docs
state (docs/wbc.md), jit + vmap, and no gradient through it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color, data, segmentation
from skimage._shared.filters import gaussian
from skimage.segmentation.slic_superpixels import _get_grid_centroids

from jaxsr.train.kinds import wbc_representations as rep

SHAPE = (80, 96)  # one shape for every image: one compilation
N_SEGMENTS = 200


def _made_up():
    """Flat rectangles and a disc on a ramp: flat regions where SLIC's distances tie."""
    h, w = SHAPE
    y, x = np.mgrid[:h, :w].astype(np.float32)
    im = np.stack([x / w, y / h, 0.5 * np.ones_like(x)], -1)
    im[10:50, 8:40] = (0.9, 0.2, 0.1)
    im[30:75, 50:90] = (0.1, 0.3, 0.8)
    im[((y - 40) ** 2 + (x - 60) ** 2) < 15**2] = (0.95, 0.95, 0.2)
    return im * 2 - 1


def _photos():
    h, w = SHAPE
    crops = {"astronaut": data.astronaut()[20:20 + h, 150:150 + w], "coffee": data.coffee()[120:120 + h, 220:220 + w],
             "chelsea": data.chelsea()[60:60 + h, 120:120 + w]}
    out = {k: v.astype(np.float32) / 127.5 - 1 for k, v in crops.items()}
    out["made_up"] = _made_up()
    return out


def _unit(im):
    """The [0, 1] rescaling slic applies first."""
    return (im - im.min()) / (im.max() - im.min())


def _ari(a, b):
    """Adjusted Rand index of two label maps (1: the same partition)."""
    a = np.unique(a.ravel(), return_inverse=True)[1]
    b = np.unique(b.ravel(), return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    pairs = lambda v: float((v * (v - 1) / 2).sum())  # noqa: E731
    both, rows, cols, n = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), a.size * (a.size - 1) / 2
    expected = rows * cols / n
    return (both - expected) / ((rows + cols) / 2 - expected)


@pytest.fixture(scope="module")
def run():
    """The photos, their device labels and targets (one jitted vmap each), and skimage's."""
    photos = _photos()
    batch = jnp.asarray(np.stack(list(photos.values())))
    labels = np.asarray(jax.jit(jax.vmap(rep.slic_labels))(batch))
    target = np.asarray(jax.jit(rep.superpixel_target_device)(batch))
    ref = {}
    for name, im in photos.items():
        kw = dict(n_segments=N_SEGMENTS, sigma=1, compactness=10, convert2lab=True)
        ref[name] = (segmentation.slic(im, enforce_connectivity=False, **kw) - 1, segmentation.slic(im, **kw),
                     rep.superpixel_target(im[None], N_SEGMENTS)[0])
    return photos, batch, labels, target, ref


def test_lab_is_skimages(run):
    photos = run[0]
    for name, im in photos.items():
        x = _unit(im)
        got = np.asarray(jax.jit(rep.rgb2lab)(x))
        assert np.abs(got - color.rgb2lab(x)).max() <= 1e-4, name  # measured 3.1e-5 (L up to 100: 4 ulps)


def test_smoothing_is_scipys_reflect_gaussian_as_slic_calls_it(run):
    """slic smooths the Lab image with sigma (1, 1, 1, 0) on (1, H, W, 3), mode 'reflect' (scipy's float64 passes);
    also on a 3x5 image, where the radius-4 kernel reflects more than once."""
    photos = run[0]
    smooth = jax.jit(rep.gaussian_reflect)
    for name, im in photos.items():
        x = _unit(im)
        want = gaussian(x[None], sigma=[1, 1, 1, 0], mode="reflect")[0]
        assert np.abs(np.asarray(smooth(x)) - want).max() <= 1e-5, name
        lab = color.rgb2lab(x)
        want = gaussian(lab[None], sigma=[1, 1, 1, 0], mode="reflect")[0]
        # float32 passes against float64 ones: a few ulps of the Lab values (measured <= 2.3e-5 at |L| ~ 100)
        assert np.abs(np.asarray(smooth(lab)) - want).max() <= 1e-6 * np.abs(want).max(), name
    tiny = np.random.RandomState(0).rand(3, 5, 3).astype(np.float32)
    want = gaussian(tiny[None], sigma=[1, 1, 1, 0], mode="reflect")[0]
    assert np.abs(np.asarray(rep.gaussian_reflect(jnp.asarray(tiny))) - want).max() <= 1e-6


@pytest.mark.parametrize("h,w,n", [(80, 96, 200), (256, 256, 200), (97, 120, 200), (64, 70, 50), (6, 300, 20),
                                   (300, 6, 20), (10, 12, 200), (33, 1000, 7)])
def test_seed_grid_is_skimages(h, w, n):
    g = rep.slic_grid(h, w, n)
    want, steps = _get_grid_centroids(np.zeros((1, h, w, 1)), n)
    ys, xs = np.arange(g.start_y, h, g.step_y), np.arange(g.start_x, w, g.step_x)
    got = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    assert (g.ny, g.nx) == (len(ys), len(xs))
    np.testing.assert_array_equal(got, want[:, 1:])
    assert g.step == max(steps)


# (labels equal to skimage's without connectivity, ARI to those, ARI to skimage's default, mean |target - host target|
# / the image's standard deviation); measured: photos 1.0, 1.0, 0.964-0.981, 0.010-0.030; made-up 0.977, 0.974, 0.871,
# 0.096 (docs/wbc.md)
BOUNDS = {"photo": (0.995, 0.99, 0.95, 0.05), "made_up": (0.95, 0.95, 0.8, 0.15)}


def test_labels_and_targets_match_skimages_slic(run):
    """Without connectivity enforcement the k-means is skimage's: equal labels on the photos; on flat regions the
    distances tie and float32 sums in another order break some ties the other way. skimage's default enforces
    connectivity, which the device does not: all of the target's difference from the host's comes from that (the host
    colouring on skimage's unenforced labels is the device target)."""
    photos, _, labels, target, ref = run
    for i, (name, im) in enumerate(photos.items()):
        ref_free, ref_default, ref_target = ref[name]
        equal, ari_free, ari_default, spread = BOUNDS["made_up" if name == "made_up" else "photo"]
        assert (labels[i] == ref_free).mean() >= equal, name
        assert _ari(labels[i], ref_free) >= ari_free, name
        assert _ari(labels[i], ref_default) >= ari_default, name
        assert np.abs(target[i] - ref_target).mean() <= spread * im.std(), name
        # the target is each device segment's mean: the host colouring of the device's own labels
        np.testing.assert_allclose(target[i], rep.adaptive_colour(labels[i], im), atol=1e-6)
        if name != "made_up":
            np.testing.assert_allclose(target[i], rep.adaptive_colour(ref_free, im), atol=1e-6)


def test_jit_vmap_no_gradient_and_the_accelerators_sums(run, monkeypatch):
    """The target is a constant: the gradient of sum(target(x) * x) is target(x) itself; vmapped, each image's target
    is its own (the pair's against the batch of four's); computed with the one-hot sums accelerators use instead of the
    CPU's scatter-add (float sums in another order: equal but for rounding on the photos, their labels skimage's)."""
    _, batch, _, target, _ = run
    monkeypatch.setattr(rep, "_scatter_sums", lambda: False)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(rep.superpixel_target_device(x) * x)))(batch[:2])
    np.testing.assert_allclose(np.asarray(grad), target[:2], atol=1e-6)


def test_the_kind_takes_device_or_host():
    """kind='wbc': wbc.superpixel 'device' (the default) or 'host'; anything else refused before a run starts."""
    from jaxsr.errors import ConfigError
    from jaxsr.recipes.wbc import get_config
    from jaxsr.train.kinds import wbc

    c = get_config()
    c.data.train_dir, c.wbc.vgg_weights = "somewhere", "vgg19.pth"  # check_wbc opens no file
    assert c.wbc.superpixel == "device"
    for ok in ("device", "host"):
        c.wbc.superpixel = ok
        wbc.check_wbc(c)
    c.wbc.superpixel = "gpu"
    with pytest.raises(ConfigError, match="wbc.superpixel must be 'device'"):
        wbc.check_wbc(c)
