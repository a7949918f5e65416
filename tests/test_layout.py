"""The layout docs/architecture.md promises: one registry that builds every architecture and round-trips its files
through the one load path, imports that run one way (jaxsr never imports convert), an installed package without a
top-level `convert`, and warm starts from jaxsr's own folder without a torch-format round trip."""
import os
import pkgutil
import re
import subprocess
import sys
import sysconfig
import tomllib
import warnings

import pytest
from flax import nnx
from parity import perturbed, plain

import jaxsr
from jaxsr import archs, weights
from jaxsr.archs import bridge
from jaxsr.archs.dat import spec_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small spec per registered architecture. A new architecture must add one here (the first test says so).
SMALL = {
    "esrgan": {"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 8},
    "dat": spec_for("dat_light", embed_dim=16, depth=[2], num_heads=[2], split_size=[2, 4], num_feat=16, scale=2),
    "compact": {"arch": "compact", "scale": 3, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_conv": 2, "act_type": "prelu"},
    "span": {"arch": "span", "scale": 2, "in_ch": 3, "out_ch": 3, "feature_channels": 8, "bias": True, "norm": False,
             "img_range": 255.0, "rgb_mean": [0.4488, 0.4371, 0.404]},
    "realplksr": {"arch": "realplksr", "scale": 2, "dim": 8, "n_blocks": 1, "kernel_size": 5, "split_ratio": 0.25,
                  "use_ea": True, "norm_groups": 4, "dropout": 0.0, "upsampler": "dysample", "layer_norm": False},
    "swinir": {"arch": "swinir", "scale": 2, "embed_dim": 8, "depths": [2], "num_heads": [2], "window_size": 4,
               "img_size": 8, "upsampler": "pixelshuffle", "start_unshuffle": 2},
    "hat": {"arch": "hat", "scale": 2, "embed_dim": 8, "depths": [2], "num_heads": [2], "window_size": 4,
            "compress_ratio": 2, "squeeze_factor": 4, "img_size": 8},
    "plksr": {"arch": "plksr", "scale": 2, "dim": 8, "n_blocks": 1, "ccm_type": "DCCM", "kernel_size": 17,
              "split_ratio": 0.25, "lk_type": "SparsePLK", "use_max_kernel": False, "sparse_kernels": [5, 5, 5, 5],
              "sparse_dilations": [1, 2, 3, 4], "with_idt": False, "use_ea": True},
    "mosr": {"arch": "mosr", "scale": 2, "in_ch": 3, "out_ch": 3, "n_block": 2, "dim": 8, "upsampler": "dys",
             "drop_path": 0.1, "kernel_size": 5, "expansion_ratio": 1.5, "conv_ratio": 1.0},
    "realcugan": {"arch": "realcugan", "scale": 4, "in_ch": 3, "out_ch": 3, "pro": True, "fast": False},  # fixed widths
    "omnisr": {"arch": "omnisr", "scale": 2, "in_ch": 3, "out_ch": 3, "num_feat": 8, "block_num": 1, "pe": True,
               "window_size": 4, "res_num": 1, "bias": True},
    "rcan": {"arch": "rcan", "scale": 2, "in_ch": 3, "n_resgroups": 1, "n_resblocks": 1, "n_feats": 8, "reduction": 4},
    "safmn": {"arch": "safmn", "scale": 2, "dim": 8, "n_blocks": 1, "ffn_scale": 2.0},
    "srformer": {"arch": "srformer", "scale": 2, "embed_dim": 8, "depths": [2], "num_heads": [2], "window_size": 4,
                 "img_size": 8, "upsampler": "pixelshuffle"},
    "swin2sr": {"arch": "swin2sr", "scale": 2, "embed_dim": 8, "depths": [2], "num_heads": [2], "window_size": 4,
                "img_size": 8, "upsampler": "pixelshuffle_aux"},  # the bicubic branch and an LR auxiliary image
    "drct": {"arch": "drct", "scale": 2, "embed_dim": 8, "depths": [6], "num_heads": [2], "gc": 4, "window_size": 4,
             "img_size": 8},
    "atd": {"arch": "atd", "scale": 2, "embed_dim": 8, "depths": [2], "num_heads": [2], "window_size": 4,
            "category_size": 256, "num_tokens": 8, "reducted_dim": 4, "convffn_kernel_size": 3, "mlp_ratio": 1.0,
            "upsampler": "pixelshuffledirect"},
    "rgt": {"arch": "rgt", "scale": 2, "embed_dim": 8, "depth": [1, 2], "num_heads": [2, 2], "split_size": [4, 4],
            "mlp_ratio": 2.0, "c_ratio": 0.5},  # group 1: shifted windows and an RG-SA block
    "ppon": {"arch": "ppon", "scale": 2, "in_ch": 3, "out_ch": 3, "nf": 8, "nb": 1, "ssim_blocks": 1, "gan_blocks": 2,
             "n_rb": 1, "n_dil": 2, "dil_nf": 4},  # one structure block: stored unwrapped (SFEM.RB1...)
    "sftgan": {"arch": "sftgan", "scale": 4, "version": "torch", "num_feat": 8, "num_block": 1, "cond_feat": 8,
               "cond_convs": 2, "cond_ch": 4, "sft_feat": 4},  # SFT_Net_torch's layout: HR_branch.0 an nn.Upsample
    "acd": {"arch": "acd", "num_in_ch": 3, "widths": [4, 4, 6, 6], "hidden": 8, "num_classes": 8, "input_size": 16},
    "outdoor_seg": {"arch": "outdoor_seg", "stem": [4, 4, 6], "blocks": [1, 2, 1, 1], "mid": [4, 4, 4, 4],
                    "out": [8, 10, 12, 14], "head": 8},
    "srresnet": {"arch": "srresnet", "scale": 3, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1,
                 "layout": "basicsr"},  # x3: one num_feat * 9 upconv, the bilinear x3 skip; `params`-wrapped .pth
    "pan": {"arch": "pan", "scale": 4, "in_ch": 3, "out_ch": 3, "nf": 8, "unf": 6, "nb": 1},
    "unet": {"arch": "unet", "num_in_ch": 3, "num_feat": 8, "skip_connection": True},
    "vgg": {"arch": "vgg", "num_in_ch": 3, "num_feat": 8, "input_size": 128},
    "p2p_unet": {"arch": "p2p_unet", "scale": 1, "in_ch": 3, "out_ch": 3, "ngf": 2, "num_downs": 5, "norm": "batch",
                 "use_dropout": True, "upsample_mode": "deconv"},
    "p2p_resnet": {"arch": "p2p_resnet", "scale": 1, "in_ch": 3, "out_ch": 3, "ngf": 2, "n_blocks": 1, "norm": "instance",
                   "use_dropout": False, "padding_type": "reflect", "upsample_mode": "upconv"},
    "patchgan": {"arch": "patchgan", "net": "n_layers", "in_ch": 3, "ndf": 4, "n_layers": 2, "norm": "batch"},
    "wbcunet": {"arch": "wbcunet", "scale": 1, "in_ch": 3, "out_ch": 3, "nf": 4, "num_blocks": 2, "mode": "pt"},
    "srflow": {"arch": "srflow", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 4, "num_block": 3, "num_grow_ch": 4,
               "K": 1, "L": 3, "noaffine_steps": 1, "hidden_ch": 4, "stack_blocks": [1, 2], "f_ch": 4},  # what a .pth infers
}


def test_every_registered_architecture_has_a_small_spec_and_a_complete_record():
    assert sorted(SMALL) == sorted(a.name for a in archs.ARCHS), "add a small spec for each new architecture to SMALL"
    for a in archs.ARCHS:
        assert a.kind in ("generator", "discriminator", "segmenter") and a.what
        assert archs.get(a.name) is a
        assert a.defaults and all(callable(applies) and (callable(m) or isinstance(m, str)) for applies, m in a.spandrel_gaps)
        assert (a.block_of is not None) == (a.kind == "discriminator")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_model_class_defaults_are_the_folders(name):
    """A folder's DEFAULTS (Arch.defaults) is its one definition of the defaults: the model class's keyword defaults
    (its Python API) agree with it, and a spec that leaves every default out builds what one that spells them does."""
    import inspect

    from jaxsr.archs import compact, dat, esrgan, hat, realplksr, span, swinir, unet, vgg
    from jaxsr.archs import rcan, safmn
    from jaxsr.archs import omnisr, realcugan
    from jaxsr.archs import mosr, plksr
    from jaxsr.archs import atd, drct, rgt, srformer, swin2sr
    from jaxsr.archs import ppon
    from jaxsr.archs import acd, outdoor_seg, sftgan
    from jaxsr.archs import pan, srresnet
    from jaxsr.archs import p2p_resnet, p2p_unet, patchgan
    from jaxsr.archs import wbcunet
    from jaxsr.archs import srflow

    cls = {"esrgan": esrgan.RRDBNet, "dat": dat.DAT, "swinir": swinir.SwinIR, "hat": hat.HAT,
           "compact": compact.SRVGGNetCompact, "span": span.SPAN, "realplksr": realplksr.RealPLKSR,
           "plksr": plksr.PLKSR, "mosr": mosr.MoSR,
           "realcugan": realcugan.UpCunet, "omnisr": omnisr.OmniSR,
           "rcan": rcan.RCAN, "safmn": safmn.SAFMN,
           "srformer": srformer.SRFormer, "swin2sr": swin2sr.Swin2SR, "drct": drct.DRCT, "atd": atd.ATD, "rgt": rgt.RGT,
           "ppon": ppon.PPON,
           "sftgan": sftgan.SFTNet, "acd": acd.ACDDiscriminator, "outdoor_seg": outdoor_seg.OutdoorSceneSeg,
           "srresnet": srresnet.MSRResNet, "pan": pan.PAN,
           "unet": unet.UNetDiscriminatorSN, "vgg": vgg.VGGStyleDiscriminator,
           "p2p_unet": p2p_unet.UnetGenerator, "p2p_resnet": p2p_resnet.ResnetGenerator,
           "patchgan": patchgan.NLayerDiscriminator,
           "wbcunet": wbcunet.UnetGeneratorWBC,
           "srflow": srflow.SRFlowNet}[name]
    record = archs.get(name)
    params = inspect.signature(cls).parameters
    for field, value in record.defaults.items():
        if field in params:
            assert plain(params[field].default) == plain(value), field
    small = SMALL[name]
    given = {k: v for k, v in small.items() if k not in record.defaults or record.defaults[k] != v}
    a = bridge.state_dict(archs.build(small, rngs=nnx.Rngs(0)), native=True)
    b = bridge.state_dict(archs.build(given, rngs=nnx.Rngs(0)), native=True)
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_base_config_model_is_the_esrgan_defaults():
    from jaxsr.train.config import base_config

    assert base_config().model.to_dict() == {"arch": "esrgan", **archs.get("esrgan").defaults}


@pytest.mark.parametrize("name", ["unet", "vgg"])
def test_block_of_names_the_discriminator_blocks(name):
    """Arch.block_of maps every top-level parameter name to its FreezeD block: U-Net conv0..conv9, VGG stage N's
    conv/bn; VGG's linear head is in none."""
    model = archs.build(SMALL[name], rngs=nnx.Rngs(0))
    tops = {str(path[0]) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    blocks = {t: archs.get(name).block_of(t) for t in sorted(tops)}
    if name == "unet":
        assert blocks == {f"conv{i}": i for i in range(10)}
    else:
        assert {t for t, b in blocks.items() if b is None} == {"linear1", "linear2"}
        assert blocks["conv0_0"] == blocks["conv0_1"] == blocks["bn0_1"] == 0
        assert {b for b in blocks.values() if b is not None} == set(range(5))  # 128 px: stages 0..4
        assert all(b == int(t[len("conv"):].split("_")[0]) for t, b in blocks.items() if t.startswith("conv"))


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_every_architecture_builds_from_its_record_and_round_trips_bit_identically(tmp_path, name, ext):
    spec = SMALL[name]
    record = archs.get(name)
    model = perturbed(spec)
    first = tmp_path / f"first{ext}"
    with warnings.catch_warnings(record=True) as caught:  # what spandrel cannot follow, warned once per gap, here only
        warnings.simplefilter("always")
        weights.export(model, spec, first)  # what PyTorch users get
    assert [str(w.message) for w in caught if "spandrel" in str(w.message)] == record.spandrel_warnings(spec)
    w = weights.read(first, kind=record.kind)  # the one path from a file to a model
    assert w.arch is record
    again, report = w.build()
    assert report.ok
    second = tmp_path / f"second{ext}"
    weights.export(again, w.spec, second)
    a, b = weights.read_state_dict(first)[0], weights.read_state_dict(second)[0]
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes(), k


def test_generators_refuse_discriminator_files_by_name(tmp_path):
    weights.export(perturbed(SMALL["vgg"]), SMALL["vgg"], tmp_path / "net_d.pth")
    with pytest.raises(jaxsr.errors.WeightsError, match="VGG-style discriminator.*not a generator"):
        weights.load_model(tmp_path / "net_d.pth")


def test_jaxsr_never_imports_convert():
    """Every jaxsr module imports with `convert` made unimportable."""
    names = [m.name for m in pkgutil.walk_packages(jaxsr.__path__, "jaxsr.") if not m.name.endswith("__main__")]
    code = ("import importlib, sys\nsys.modules['convert'] = None\n"
            f"for n in {names!r}:\n    importlib.import_module(n)\n"
            "print(len([m for m in sys.modules if m.startswith('jaxsr')]))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= len(names) > 30


# optional tools the docs and messages name that are not dependencies of ours: lpips and DISTS_pytorch hold the
# perceptual metrics' weight files, wandb mirrors the logs, spandrel/torchvision are the PyTorch side of the tests
OPTIONAL = {"lpips", "dists-pytorch", "wandb", "spandrel", "spandrel-extra-arches", "torchvision", "tensorboard",
            "tensorboard-plugin-profile"}  # the viewers of the logs and of profiles
_NOT_A_NAME = re.compile(r"^(-|\.|\$|\{|/)|/|\.whl$")


def _install_names(text):
    """The distributions that each `pip install ...` in `text` asks for (not options, paths, '.', or variables)."""
    for args in re.findall(r"pip install ([^`'\"\n)(;]*(?:'[^'\n]*'[^`\"\n)(;]*)*)", text):
        skip = False
        for token in args.split():
            token = token.strip("'\"")
            if token.startswith(("#", "|", "&", ">", "2>")):
                break  # a comment, or the shell command goes on
            if skip or not token:
                skip = False
                continue
            if token in ("--index-url", "--target", "--python", "-r", "--report", "-c", "--retries", "--timeout"):
                skip = True
            elif not _NOT_A_NAME.search(token):
                yield re.split(r"[\[<>=!~]", token)[0].lower().replace("_", "-")


def test_install_advice_names_this_project_or_a_real_dependency():
    """`jaxsr` on the Python package index is another project: every package the repository tells a user to
    pip-install is this project's distribution, one of its dependencies, or an optional tool it documents."""
    project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]
    deps = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    known = {project["name"], *OPTIONAL} | {re.split(r"[\[<>=!~ ;]", d)[0].lower().replace("_", "-") for d in deps}
    assert project["name"] != "jaxsr" and "jaxsr" not in known
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    asked = {}
    for name in files:
        if name.endswith((".py", ".md", ".sh", ".toml", ".txt", ".cfg")) or "/.ci/" in f"/{name}":
            for dist in _install_names(open(os.path.join(ROOT, name), errors="replace").read()):
                asked.setdefault(dist, name)
    assert {"onnx", "onnxruntime", "wandb", "lpips"} <= set(asked), asked  # the parser sees the advice that exists
    assert not {d: where for d, where in asked.items() if d not in known}


def test_installed_package_has_console_scripts_and_no_convert(tmp_path):
    """`pip install .` into a fresh venv (dependencies from this Python's site-packages): no top-level convert,
    and the console scripts convert a file, run from another folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py, bin_ = venv / "bin" / "python", venv / "bin"
    # the venv sees this environment's packages (setuptools to build, jax to run; nothing is downloaded) through a
    # plain path list: unlike --system-site-packages that is this venv, not the base interpreter, and the .pth files
    # there (this checkout's editable install) are not run, so the jaxsr it imports is the one pip installs
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True,
                          text=True, check=True).stdout.strip()
    here = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    with open(os.path.join(site, "parent_env.pth"), "w") as f:
        f.write("\n".join(here) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-build-isolation", ROOT],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert os.path.isdir(os.path.join(site, "jaxsr")) and not os.path.exists(os.path.join(site, "convert"))
    assert [n.split("-")[0] for n in os.listdir(site) if n.endswith(".dist-info")] == ["jaxsr_train"]  # our name
    out = tmp_path / "elsewhere"
    out.mkdir()
    probe = subprocess.run([str(py), "-c", "import jaxsr; print(jaxsr.__file__)\ntry:\n import convert\nexcept ImportError:\n print('no convert')"],
                           cwd=out, capture_output=True, text=True, timeout=120)
    assert probe.stdout.splitlines() == [os.path.join(site, "jaxsr", "__init__.py"), "no convert"], probe.stderr

    spec = SMALL["esrgan"]
    weights.export(perturbed(spec), spec, out / "m.safetensors")
    r = subprocess.run([str(bin_ / "jaxsr-from-pth"), "m.safetensors", "native"], cwd=out, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "architecture: esrgan" in r.stdout, r.stderr
    r = subprocess.run([str(bin_ / "jaxsr-to-pth"), "native", "back.pth"], cwd=out, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "wrote back.pth (esrgan x4)" in r.stdout, r.stderr
    a, b = weights.read_state_dict(out / "m.safetensors")[0], weights.read_state_dict(out / "back.pth")[0]
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    # the recipes by name, and the module command lines, from a folder that is not the checkout
    r = subprocess.run([str(bin_ / "jaxsr-train"), "--config", "demo", "--config.optim.lr=1e-3", "--print_config"], cwd=out,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and '"name": "demo"' in r.stdout, r.stderr
    (out / "o.yaml").write_text("base: demo\nname: mine\n")  # an overlay on an installed recipe
    r = subprocess.run([str(bin_ / "jaxsr-train"), "--config", "o.yaml", "--print_config"], cwd=out, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and '"name": "mine"' in r.stdout, r.stderr
    assert os.path.exists(os.path.join(site, "jaxsr", "recipes", "example.yaml"))  # the commented example ships
    from conftest import photo

    from jaxsr.imageio import write_image

    write_image(out / "in.png", photo("chelsea", 20, 24))
    r = subprocess.run([str(py), "-m", "jaxsr.infer", "--weights", "native", "--input", "in.png", "--output", "o.png"],
                       cwd=out, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (out / "o.png").exists(), r.stderr


@pytest.mark.parametrize("name", ["esrgan", "dat"])
def test_warm_start_from_a_native_folder_is_the_pth_model_without_a_torch_round_trip(tmp_path, monkeypatch, name):
    from jaxsr.cli import from_pth
    from jaxsr.train.config import base_config
    from jaxsr.train.kinds.sr import build_generator

    spec = SMALL[name]
    weights.export(perturbed(spec, seed=1), spec, tmp_path / "m.pth")
    assert from_pth([str(tmp_path / "m.pth"), str(tmp_path / "native")]) == 0
    cfg = base_config()
    cfg.model.arch, cfg.scale = "auto", spec["scale"]
    cfg.init_weights = str(tmp_path / "m.pth")
    from_file, file_spec = build_generator(cfg)

    def no_torch_format(*a, **k):
        raise AssertionError("a native warm start went through the torch format")

    for fn in ("torch_key", "to_torch_layout", "to_flax_layout"):  # every export and torch-named load goes through these
        monkeypatch.setattr(bridge, fn, no_torch_format)
    monkeypatch.setattr(weights, "read_state_dict", no_torch_format)
    cfg.init_weights = str(tmp_path / "native")
    from_native, native_spec = build_generator(cfg)
    monkeypatch.undo()
    assert native_spec == file_spec
    a, b = bridge.state_dict(from_file, native=True), bridge.state_dict(from_native, native=True)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
