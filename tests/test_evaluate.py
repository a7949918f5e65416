"""`python -m jaxsr.evaluate` on real photographs: BasicSR's PSNR/SSIM recomputed here independently (cv2 + numpy,
BGR files, to_y_channel, getGaussianKernel/filter2D), odd files reported, several models, a workdir's test split."""
import json

import cv2
import numpy as np
from conftest import photo, torch_forward
from test_infer import tiny_model

from jaxsr.evaluate import main
from jaxsr.imageio import write_image


# ------------------------------------------------------------------ BasicSR's formulas (psnr_ssim.py), independently


def basicsr_y(img_bgr):
    img = img_bgr.astype(np.float32) / 255.0
    y = np.dot(img, [24.966, 128.553, 65.481]) + 16.0  # bgr2ycbcr(y_only=True) on float32 input, /255 after
    return (y / 255.0)[..., None] * 255.0


def basicsr_psnr(a, b, crop, y=True):
    a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    if y:
        a, b = basicsr_y(a), basicsr_y(b)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * np.log10(255.0 * 255.0 / mse)


def basicsr_ssim(a, b, crop, y=True):
    a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    if y:
        a, b = basicsr_y(a), basicsr_y(b)
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    win = np.outer(k, k.transpose())
    vals = []
    for i in range(a.shape[2]):
        x, z = a[..., i], b[..., i]
        f = lambda t: cv2.filter2D(t, -1, win)[5:-5, 5:-5]  # noqa: E731
        mu1, mu2 = f(x), f(z)
        s1, s2, s12 = f(x**2) - mu1**2, f(z**2) - mu2**2, f(x * z) - mu1 * mu2
        vals.append((((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))).mean())
    return np.mean(vals)


# ------------------------------------------------------------------ fixtures


def make_folder(root):
    """Real photographs (sizes not multiples of 4, so modcrop matters), one gray, one RGBA, one corrupt, one tiny."""
    (root / "sub").mkdir(parents=True)
    write_image(root / "astronaut.png", photo("astronaut", 98, 130, top=20, left=150))
    write_image(root / "coffee.png", photo("coffee", 101, 122, top=100, left=200))
    write_image(root / "sub" / "chelsea.jpg", photo("chelsea", 90, 110, top=60, left=120))
    write_image(root / "gray.png", photo("camera", 96, 120, top=150, left=150).mean(2))
    write_image(root / "rgba.png", np.concatenate([photo("rocket", 80, 120, top=200, left=100), np.full((80, 120, 1), 0.4, np.float32)], 2))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    write_image(root / "tiny.png", photo("astronaut", 16, 16))  # 16 px - 2*4 border < SSIM's 11-px window


def test_metrics_equal_basicsr_and_odd_files_are_reported(tmp_path, capsys):
    from jaxsr.weights import load_model, save_native

    net = tiny_model(tmp_path / "a.pth")  # a PyTorch trainer's file ({'params_ema': ...})
    model, info = load_model(tmp_path / "a.pth")
    save_native(tmp_path / "b", model, {"arch": info["arch"], "scale": 4, "in_ch": 3, "out_ch": 3, **info["hyperparameters"]})
    hr_dir, out = tmp_path / "hr", tmp_path / "report"
    make_folder(hr_dir)
    rc = main(["--weights", str(tmp_path / "a.pth"), "--weights", str(tmp_path / "b"), "--hr", str(hr_dir), "--scale", "4",
               "--out", str(out), "--save-images"])
    assert rc == 1  # two files failed, the others were measured
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["models"] == ["bicubic", "a", "b"]
    assert sorted(f["image"] for f in rep["failed"]) == ["broken", "tiny"]
    assert "cannot decode" in next(f for f in rep["failed"] if f["image"] == "broken")["error"]
    rows = {r["image"]: r for r in rep["images"]}
    assert sorted(rows) == ["astronaut", "coffee", "gray", "rgba", "sub/chelsea"]
    assert rows["gray"]["notes"] and rows["rgba"]["notes"]
    for name, r in rows.items():
        ext = ".jpg" if name == "sub/chelsea" else ".png"
        hr = cv2.imread(str(hr_dir / (name + ext)), cv2.IMREAD_COLOR)  # BasicSR reads every GT as 3-channel BGR
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]  # modcrop
        for m in rep["models"]:
            sr = cv2.imread(str(out / "sr" / m / (name + ".png")), cv2.IMREAD_COLOR)
            assert sr.shape == hr.shape
            assert abs(r["results"][m]["psnr"] - basicsr_psnr(sr, hr, 4)) < 1e-9
            assert abs(r["results"][m]["ssim"] - basicsr_ssim(sr, hr, 4)) < 1e-9
        # the measured model output is the PyTorch network's on the same LR (8-bit rounding aside)
        lr = cv2.imread(str(out / "lr" / (name + ".png")), cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
        assert lr.shape[:2] == (hr.shape[0] // 4, hr.shape[1] // 4)
        ref = np.round(np.clip(torch_forward(net, lr[None])[0], 0, 1) * 255)[..., ::-1]
        assert np.abs(cv2.imread(str(out / "sr" / "a" / (name + ".png"))).astype(float) - ref).max() <= 1
        assert (out / "compare" / (name + ".png")).exists()
    assert rows["coffee"]["results"]["a"] == rows["coffee"]["results"]["b"]  # .pth and its jaxsr export
    for m in rep["models"]:
        assert abs(rep["mean"][m]["psnr"] - np.mean([r["results"][m]["psnr"] for r in rows.values()])) < 1e-9
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "image,model,psnr,ssim" and len(csv_lines) == 1 + 5 * 3 + 3
    printed = capsys.readouterr()
    assert "failed broken" in printed.out and "PSNR" in printed.out


def test_rgb_and_border_options_and_given_lr(tmp_path):
    tiny_model(tmp_path / "m.pth")
    hr_dir, lr_dir, out = tmp_path / "hr", tmp_path / "lr", tmp_path / "o"
    hr = photo("coffee", 96, 128, top=100, left=200)
    hr_dir.mkdir()
    lr_dir.mkdir()
    write_image(hr_dir / "c.png", hr)
    write_image(lr_dir / "cx4.png", cv2.resize(hr, (32, 24), interpolation=cv2.INTER_AREA))  # DIV2K-style name
    assert main(["--weights", str(tmp_path / "m.pth"), "--hr", str(hr_dir), "--lr", str(lr_dir), "--scale", "4", "--rgb",
                 "--crop-border", "2", "--out", str(out), "--save-images"]) == 0
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["settings"]["channel"] == "RGB" and rep["settings"]["crop_border"] == 2 and rep["settings"]["lr"] == "given"
    hr8 = cv2.imread(str(hr_dir / "c.png"))
    sr8 = cv2.imread(str(out / "sr" / "m" / "c.png"))
    r = rep["images"][0]["results"]["m"]
    assert abs(r["psnr"] - basicsr_psnr(sr8, hr8, 2, y=False)) < 1e-9 and abs(r["ssim"] - basicsr_ssim(sr8, hr8, 2, y=False)) < 1e-9
    assert np.array_equal(cv2.imread(str(out / "lr" / "c.png")), cv2.imread(str(lr_dir / "cx4.png")))


def test_workdir_test_split_and_its_export(tmp_path):
    from jaxsr.weights import export, load_model

    tiny_model(tmp_path / "m.pth")
    model, info = load_model(tmp_path / "m.pth")
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    spec = {"arch": info["arch"], "scale": info["scale"], "in_ch": info["in_ch"], "out_ch": info["out_ch"], **info["hyperparameters"]}
    export(model, spec, work / "models" / "net_x4.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    for n in ("astronaut", "coffee", "chelsea"):
        write_image(photos / f"{n}.png", photo(n, 64, 80, top=50, left=100))
    splits = {"source": "hr_dir", "train": [str(photos / "astronaut.png")], "val": [str(photos / "coffee.png")],
              "test": [str(photos / "chelsea.png")], "train_lr": None, "val_lr": None, "test_lr": None}
    (work / "dataset_splits.json").write_text(json.dumps(splits))
    assert main(["--hr", str(work), "--out", str(tmp_path / "r")]) == 0  # no --weights: the workdir's latest export
    rep = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [r["image"] for r in rep["images"]] == ["chelsea"] and rep["settings"]["scale"] == 4
    assert rep["models"] == ["bicubic", "work"]


# ------------------------------------------------------------------ LPIPS against a PyTorch formulation of the reference


def torch_backbone(net):
    import torch.nn as nn

    if net == "alex":
        return nn.Sequential(nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
                             nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
                             nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU()), [1, 4, 7, 9, 11]
    layers, c = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        layers += [nn.MaxPool2d(2, 2)] if v == "M" else [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
        c = v if v != "M" else c
    return nn.Sequential(*layers), [3, 8, 15, 22, 29]


def torch_lpips(features, taps, lins, a, b):
    import torch

    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    outs = []
    for img in (a, b):
        x = (torch.from_numpy(img.transpose(2, 0, 1))[None] * 2 - 1 - shift) / scale
        feats = []
        for i, layer in enumerate(features):
            x = layer(x)
            if i in taps:
                feats.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        outs.append(feats)
    with torch.no_grad():
        return float(sum(torch.nn.functional.conv2d((f0 - f1) ** 2, w).mean((2, 3)) for f0, f1, w in zip(*outs, lins)))


def test_lpips_equals_the_reference_formulation(tmp_path):
    import torch

    from jaxsr.lpips import load_lpips

    sr, hr = photo("astronaut", 72, 80, top=100, left=180), photo("astronaut", 72, 80, top=102, left=181)
    for net in ("vgg", "alex"):
        torch.manual_seed(0)
        features, taps = torch_backbone(net)
        torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / f"{net}_backbone.pth")
        chans = [features[t - 1].out_channels for t in taps]
        lins = [torch.rand(1, c, 1, 1) * 0.1 for c in chans]
        torch.save({f"lin{k}.model.1.weight": w for k, w in enumerate(lins)}, tmp_path / f"{net}.pth")
        ours = load_lpips(str(tmp_path / f"{net}_backbone.pth"), str(tmp_path / f"{net}.pth"))
        with torch.no_grad():
            ref = torch_lpips(features.eval(), taps, lins, sr, hr)
        assert ours.net == net and abs(ours(sr, hr) - ref) <= 1e-5 * max(1.0, ref), (net, ours(sr, hr), ref)
        assert abs(ours(hr, hr)) < 1e-9
    # through the command: an LPIPS column in the report
    tiny_model(tmp_path / "m.pth")
    (tmp_path / "hr").mkdir()
    write_image(tmp_path / "hr" / "a.png", hr)
    assert main(["--weights", str(tmp_path / "m.pth"), "--hr", str(tmp_path / "hr"), "--out", str(tmp_path / "r"),
                 "--lpips", str(tmp_path / "alex_backbone.pth"), str(tmp_path / "alex.pth")]) == 0
    assert (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0] == "image,model,psnr,ssim,lpips"


def test_lpips_without_weights_says_how_to_get_them(tmp_path, capsys):
    tiny_model(tmp_path / "m.pth")
    (tmp_path / "hr").mkdir()
    write_image(tmp_path / "hr" / "a.png", photo("coffee", 64, 64))
    assert main(["--weights", str(tmp_path / "m.pth"), "--hr", str(tmp_path / "hr"), "--lpips", "nope.pth", "nope2.pth"]) == 2
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and "pip install lpips" in err
