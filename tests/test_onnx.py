"""ONNX export (`jaxsr.deploy`, `python -m convert.to_onnx`) against onnxruntime's CPU provider, the reference
runtime: every registered generator (SMALL's, so new ones are covered as they register) as one dynamic fp32 file
that equals jaxsr's forward within 1e-4 at two sizes that are multiples of no window, fp16 (one generator per kind of
graph, FP16) within 45 dB PSNR of jaxsr's fp32 on a photograph, onnx.checker, declared dynamic axes, metadata, and refusals without a partial file."""
import functools
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from test_layout import SMALL, perturbed

from jaxsr import archs, deploy, weights
from jaxsr.archs.dat import spec_for
from jaxsr.jaxpr_onnx import ExportError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4  # max |onnxruntime - jaxsr| for fp32 files
FP16_PSNR = 45.0  # dB against jaxsr's fp32 forward
SIZES = ((23, 37), (29, 19))  # odd: multiples of no window (2, 4, 8) and no unshuffle factor (2, 4)
GENERATORS = {n: s for n, s in SMALL.items() if archs.get(n).kind == "generator"}
EXTRA = {  # paths SMALL's specs do not reach
    "esrgan_x2": {**SMALL["esrgan"], "scale": 2},  # pixel-unshuffle: the graph reflect-pads to even sides and crops
    "esrgan_x1": {**SMALL["esrgan"], "scale": 1},
    "rcan_x1_unshuffle": {**SMALL["rcan"], "scale": 1, "unshuffle_mod": True, "norm": False},  # RCAN's own reflect pad
    "dat_shifted": spec_for("dat_light", embed_dim=16, depth=[1, 1], num_heads=[2, 2], split_size=[2, 4], num_feat=16,
                            scale=2, upsampler="dysample"),  # shifted windows (masks) and DySample's gather
    "realcugan_fast": {**SMALL["realcugan"], "scale": 2, "pro": False, "fast": True},  # unshuffled, sides padded to 4
}
CASES = {**GENERATORS, **EXTRA}


@functools.cache
def model_of(name):
    return perturbed(CASES[name])


@functools.cache
def jaxsr_out(name, h, w, batch=1):
    """jaxsr's fp32 forward on the photograph crop both tests compare with (compiled once per size), with the
    condition map of a conditioned generator (SFT-Net's segmentation: its graph's second input)."""
    return deploy.reference(model_of(name), CASES[name], deploy.photo(h, w, batch), cond_of(name, h, w, batch))


def cond_of(name, h, w, batch=1):
    return deploy.condition_map(model_of(name), h, w, batch)


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def static_or_xfail(name, err):
    """A model whose forward cannot trace with symbolic sizes: check that a static file matches, then xfail."""
    h, w = SIZES[0]
    proto, _ = deploy.build_graph(model_of(name), CASES[name], static=(h, w))
    diff = np.abs(deploy.run_onnx(proto.SerializeToString(), deploy.photo(h, w), cond=cond_of(name, h, w))
                  - jaxsr_out(name, h, w)).max()
    assert diff <= TOL, (h, w, diff)
    pytest.xfail(str(err))


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_dynamic_fp32_file_equals_jaxsr_at_two_sizes(name):
    spec, model = CASES[name], model_of(name)
    try:
        proto, dynamic = deploy.build_graph(model, spec)
    except ExportError as e:
        if "dynamic height and width" not in str(e):
            raise
        static_or_xfail(name, e)
    assert dynamic == ("batch", "height", "width")
    assert dims(proto.graph.input[0])[::2] == ["batch", "height"] and dims(proto.graph.input[0])[3] == "width"
    data = proto.SerializeToString()
    for (h, w), batch in zip(SIZES, (1, 2)):
        x = deploy.photo(h, w, batch)
        y, ref = deploy.run_onnx(data, x, cond=cond_of(name, h, w, batch)), jaxsr_out(name, h, w, batch)
        s = model.scale
        assert y.shape == ref.shape == (batch, 3, h * s, w * s)
        diff = float(np.abs(y - ref).max())
        print(f"{name} {h}x{w} batch {batch}: max |diff| {diff:.2e}")
        assert diff <= TOL, (h, w, diff)


# fp16 per family of graph: convolutions, normalised convolutions with attention, DySample's gather, window attention
# with relative bias, channel/rectangle attention, a U-Net cascade, a [-1, 1] generator (the fp32 test covers them all)
FP16 = ("esrgan", "span", "realplksr", "swinir", "hat", "dat", "realcugan", "wbcunet", "omnisr")


@pytest.mark.parametrize("name", sorted(n for n in GENERATORS if n in FP16))
def test_fp16_file_is_within_45db_of_jaxsr_fp32_on_a_photograph(name):
    spec, model = GENERATORS[name], model_of(name)
    h, w = SIZES[0]
    try:
        proto, _ = deploy.build_graph(model, spec, precision="fp16")
    except ExportError as e:
        if "dynamic height and width" not in str(e):
            raise
        proto, _ = deploy.build_graph(model, spec, precision="fp16", static=(h, w))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)  # weights stored as fp16
    y = deploy.run_onnx(proto.SerializeToString(), deploy.photo(h, w), cond=cond_of(name, h, w))
    psnr = deploy.psnr(y, jaxsr_out(name, h, w))
    print(f"{name} fp16: PSNR {psnr:.1f} dB against jaxsr fp32, max |diff| {np.abs(y - jaxsr_out(name, h, w)).max():.1e}")
    assert psnr >= FP16_PSNR


def test_exported_file_passes_the_checker_declares_its_axes_and_round_trips_its_metadata(tmp_path):
    spec = SMALL["esrgan"]
    path = tmp_path / "m.onnx"
    done = deploy.export_onnx(perturbed(spec), spec, path)
    assert done.verification.max_abs <= TOL and os.listdir(tmp_path) == ["m.onnx"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["output"]
    assert dims(proto.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(proto.graph.output[0]) == ["batch", 3, "out_height", "out_width"]
    assert proto.opset_import[0].version == deploy.DEFAULT_OPSET
    meta = deploy.read_metadata(path)
    assert meta["jaxsr_spec"] == spec and meta["arch"] == "esrgan" and meta["scale"] == 4
    assert (meta["in_ch"], meta["out_ch"], meta["precision"], meta["size_multiple"]) == (3, 3, "fp32", 1)


def test_static_size_and_batch_fix_the_axes_and_still_pad_in_the_graph():
    spec = EXTRA["esrgan_x2"]
    model = perturbed(spec)
    proto, dynamic = deploy.build_graph(model, spec, static=(23, 37), batch=2, opset=21)
    assert dynamic == () and dims(proto.graph.input[0]) == [2, 3, 23, 37] and dims(proto.graph.output[0]) == [2, 3, 46, 74]
    x = deploy.photo(23, 37, 2)
    assert np.abs(deploy.run_onnx(proto.SerializeToString(), x) - deploy.reference(model, spec, x)).max() <= TOL


def test_bf16_passes_the_checker_and_says_that_onnxruntime_cpu_cannot_run_it(tmp_path):
    spec = SMALL["esrgan"]
    done = deploy.export_onnx(perturbed(spec), spec, tmp_path / "b.onnx", bf16=True)
    onnx.checker.check_model(onnx.load(str(tmp_path / "b.onnx")), full_check=True)
    assert done.opset == deploy.BF16_OPSET and done.precision == "bf16"
    assert done.verification.skipped and "bfloat16" in done.verification.line()


def test_failed_verification_and_failed_writes_leave_no_file(tmp_path, monkeypatch):
    spec = SMALL["esrgan"]
    model = perturbed(spec)
    (tmp_path / "dir.onnx").mkdir()  # a folder where the file should go: the final rename fails
    with pytest.raises(ExportError, match="cannot write"):
        deploy.export_onnx(model, spec, tmp_path / "dir.onnx", verify=False)
    real = deploy.run_onnx
    monkeypatch.setattr(deploy, "run_onnx", lambda data, x: real(data, x) + 0.01)
    with pytest.raises(ExportError, match="verification failed.*nothing written"):
        deploy.export_onnx(model, spec, tmp_path / "off.onnx")
    assert sorted(os.listdir(tmp_path)) == ["dir.onnx"] and not os.listdir(tmp_path / "dir.onnx")


def test_refusals_name_what_cannot_be_exported(tmp_path, monkeypatch):
    spec = SMALL["esrgan"]
    model = perturbed(spec)
    with pytest.raises(ExportError, match="VGG-style discriminator.* only generators"):
        deploy.build_graph(perturbed(SMALL["vgg"]), SMALL["vgg"])
    with pytest.raises(ExportError, match="opset 12 is not supported; use 17 to 23"):
        deploy.build_graph(model, spec, opset=12)
    with pytest.raises(ExportError, match="bf16 needs opset 22"):
        deploy.build_graph(model, spec, precision="bf16", opset=17)
    core = deploy._core
    # a forward that needs concrete sizes (numpy on the shape), and one with a primitive ONNX has no lowering for here
    monkeypatch.setattr(deploy, "_core", lambda m: lambda x: core(m)(x) + np.zeros(x.shape[2:], np.float32).sum())
    with pytest.raises(ExportError, match=r"esrgan cannot be exported with a dynamic height and width.*--static HxW"):
        deploy.export_onnx(model, spec, tmp_path / "a.onnx")
    monkeypatch.setattr(deploy, "_core", lambda m: lambda x: jnp.cumprod(core(m)(x), axis=-1))
    with pytest.raises(ExportError, match="no ONNX lowering for the JAX primitive.*cumprod"):
        deploy.export_onnx(model, spec, tmp_path / "b.onnx")
    assert os.listdir(tmp_path) == []


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "convert.to_onnx", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    return r.returncode, r.stdout, r.stderr


def test_command_line_writes_a_verified_file_and_refuses_with_one_error_line(tmp_path):
    spec = SMALL["esrgan"]
    weights.save_native(tmp_path / "native", perturbed(spec), spec)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    code, stdout, err = cli(tmp_path / "native", out)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith(f"wrote {out} (esrgan x4, fp32, opset 17, dynamic batch/height/width,")
    assert lines[1].startswith("verify: onnxruntime") and "max |diff|" in lines[1] and "PSNR" in lines[1]
    assert deploy.read_metadata(out)["jaxsr_spec"] == spec
    refusals = [((tmp_path / "missing.pth", tmp_path / "out" / "a.onnx"), "no such file"),
                ((tmp_path / "native", tmp_path / "nowhere" / "c.onnx"), "is not a writable folder")]
    for args, message in refusals:
        code, stdout, err = cli(*args)
        assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path / "out") == ["m.onnx"]
