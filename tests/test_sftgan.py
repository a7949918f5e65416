"""SFTGAN's networks against their PyTorch references: SFT-Net in both released layouts (SFT_Net, SFT_Net_torch), the ACD
discriminator (both heads, running and batch statistics) and OutdoorSceneSeg, from reduced files in the released key
layouts with every weight perturbed (tests/golden/sftgan, made by make_golden.py there: no installed package holds
these references), loaded through jaxsr's one load path; their exports are the committed files, key for key and bit
for bit; `python -m jaxsr.segment` gives the reference's probability maps for an image file; and the refusals."""
import json
import os
import subprocess
import sys
import warnings

import cv2
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from flax import nnx

import jaxsr
from jaxsr import archs, pth, segment, weights
from jaxsr.archs import acd, outdoor_seg, sftgan
from jaxsr.errors import WeightsError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "sftgan")
TOL = 1e-5
SFT = {"arch": "sftgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 2, "num_classes": 8,
       "cond_feat": 12, "cond_convs": 5, "cond_ch": 4, "sft_feat": 4}
ACD = {"arch": "acd", "num_in_ch": 3, "widths": [4, 4, 6, 6, 8, 8, 10, 10], "hidden": 12, "num_classes": 8,
       "input_size": 48}
SEG = {"arch": "outdoor_seg", "in_ch": 3, "stem": [4, 4, 6], "blocks": [2, 1, 2, 1], "mid": [4, 6, 10, 12],
       "out": [10, 12, 14, 16], "head": 12, "num_classes": 8}


run = nnx.jit(lambda model, *inputs: model(*inputs))  # one compile per forward, not one per op


@pytest.fixture(scope="module")
def golden():
    out = {}
    for group in ("sft", "acd", "seg"):
        with np.load(os.path.join(GOLDEN, f"{group}.npz")) as f:
            out.update({k: f[k] for k in f.files})
    return out


def nhwc(a):
    return jnp.asarray(a.transpose(0, 2, 3, 1))


def diff(ours, ref_nchw):
    ours = np.asarray(ours)
    assert ours.shape == ref_nchw.transpose(0, 2, 3, 1).shape
    return float(np.abs(ours - ref_nchw.transpose(0, 2, 3, 1)).max())


def assert_export_is_the_file(model, spec, src, tmp_path):
    """Our .pth export holds the committed file's keys, dtypes, shapes and bytes, and reads back to the same spec."""
    out = tmp_path / os.path.basename(src)
    with warnings.catch_warnings(record=True) as caught:  # spandrel does not know these families: said once, here only
        warnings.simplefilter("always")
        weights.export(model, spec, out)
    assert [str(w.message) for w in caught] == archs.get(spec["arch"]).spandrel_warnings(spec)
    flat = pth.load(out)  # a plain state dict, as torch.save(model.state_dict()) writes the released files
    assert all(isinstance(v, np.ndarray) for v in flat.values())
    a, b = weights.read_state_dict(src)[0], weights.read_state_dict(out)[0]
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes(), k
    assert weights.read(out, kind=archs.get(spec["arch"]).kind).spec == spec


@pytest.mark.parametrize("name, version", [("sft_net", "pytorch"), ("sft_net_torch", "torch")])
def test_sft_net_equals_the_reference_in_both_layouts(golden, tmp_path, name, version):
    path = os.path.join(GOLDEN, f"{name}.pth")
    w = weights.read(path, arch="auto")
    assert w.arch is sftgan.ARCH and w.spec == {**SFT, "version": version}
    model, info = jaxsr.load_model(path)
    assert info["arch"] == "sftgan" and info["scale"] == 4 and info["load_report"].ok
    assert archs.get("sftgan").condition == model.condition == "seg"
    lr, seg = nhwc(golden["sft_lr"]), nhwc(golden["sft_seg"])  # seg at the output size: 44x52 for an 11x13 input
    d = diff(run(model, lr, seg), golden[name])
    print(f"{name}: max |jaxsr - reference| {d:.2e}")
    assert d <= TOL
    again, report = w.build()
    assert report.ok and np.array_equal(np.asarray(run(again, lr, seg)), np.asarray(run(model, lr, seg)))
    assert_export_is_the_file(model, w.spec, path, tmp_path)


def test_sft_net_takes_the_segmentation_at_the_output_size(golden):
    model, _ = jaxsr.load_model(os.path.join(GOLDEN, "sft_net.pth"))
    lr, seg = nhwc(golden["sft_lr"]), nhwc(golden["sft_seg"])
    with pytest.raises(ValueError, match=r"8-class segmentation probabilities at the output size \(44x52 for a 11x13 input\)"):
        model(lr, seg[:, ::4, ::4])


def test_acd_equals_the_reference_with_running_and_batch_statistics(golden, tmp_path):
    path = os.path.join(GOLDEN, "acd.pth")
    w = weights.read(path, kind="discriminator")
    assert w.arch is acd.ARCH and w.spec == ACD
    x = nhwc(golden["acd_in"])
    model, report = w.build()  # a discriminator trains with batch statistics: built that way, as BasicSR's net_d
    assert report.ok
    gan, cls = run(model, x)
    assert gan.shape == (2, 1) and cls.shape == (2, 8)
    d_train = max(np.abs(np.asarray(gan) - golden["acd_gan_train"]).max(), np.abs(np.asarray(cls) - golden["acd_cls_train"]).max())
    model, _ = w.build()
    model.eval()
    gan, cls = run(model, x)
    d_eval = max(np.abs(np.asarray(gan) - golden["acd_gan_eval"]).max(), np.abs(np.asarray(cls) - golden["acd_cls_eval"]).max())
    print(f"ACD: max |jaxsr - reference| {d_eval:.2e} (running statistics), {d_train:.2e} (batch statistics)")
    assert d_eval <= TOL and d_train <= TOL
    assert_export_is_the_file(model, w.spec, path, tmp_path)
    assert {acd.block_of(n) for n in ("feature", "gan", "cls")} == {0, None} and acd.block_of("gan") is None


def test_outdoor_seg_equals_the_reference(golden, tmp_path):
    """On a crop whose sides are no multiple of 8 (the max-pool's ceil_mode; the x8 deconv then overshoots, as torch's)."""
    path = os.path.join(GOLDEN, "outdoor_seg.pth")
    w = weights.read(path, kind="segmenter")
    assert w.arch is outdoor_seg.ARCH and w.spec == SEG
    model, report = w.build()
    assert report.ok
    d = diff(run(model, nhwc(golden["seg_in"])), golden["seg_out"])
    print(f"OutdoorSceneSeg: max |jaxsr - reference| {d:.2e}")
    assert d <= TOL
    assert_export_is_the_file(model, w.spec, path, tmp_path)


def test_segment_writes_the_reference_maps(golden, tmp_path):
    """test_segmentation.py's steps on a PNG (modcrop 8, BGR, MATLAB bicubic x1/4 then x4, mean, softmax): the same
    8xHxW float32 tensor under <name>_bic.pth; an existing map is refused unless --overwrite.

    The network on the reference's own input is within TOL. The reference computes its MATLAB imresize in float32
    (jaxsr's in float64), so the inputs differ by up to ~5e-5 on the 0..255 scale, and the maps by up to ~2e-5."""
    model, _ = segment.load_segmenter(os.path.join(GOLDEN, "outdoor_seg.pth"))
    ref_in = golden["seg_pipeline_in"][0].transpose(1, 2, 0)
    ref = golden["seg_pipeline"]
    d_net = float(np.abs(segment.probabilities(model, ref_in).transpose(2, 0, 1) - ref).max())
    d_in = float(np.abs(segment.network_input(golden["seg_image"] / np.float32(255)) - ref_in).max())
    assert d_net <= TOL and d_in <= 1e-4

    (tmp_path / "hr").mkdir()
    cv2.imwrite(str(tmp_path / "hr" / "cat.png"), np.ascontiguousarray(golden["seg_image"][..., ::-1]))
    args = ["--weights", os.path.join(GOLDEN, "outdoor_seg.pth"), "--input", str(tmp_path / "hr"), "--output", str(tmp_path / "seg")]
    assert segment.main(args) == 0
    prob = pth.load(tmp_path / "seg" / "cat_bic.pth")
    assert prob.dtype == np.float32 and prob.shape == ref.shape == (8, 40, 48)
    d = float(np.abs(prob - ref).max())
    print(f"jaxsr.segment: network {d_net:.2e}, input {d_in:.2e} (0..255), maps {d:.2e} from the reference's")
    assert d <= 5e-5
    before = os.path.getmtime(tmp_path / "seg" / "cat_bic.pth")
    assert segment.main(args) == 2 and os.path.getmtime(tmp_path / "seg" / "cat_bic.pth") == before
    assert segment.main(args + ["--overwrite"]) == 0


def test_segment_refuses_a_super_resolution_file_by_name(tmp_path, capsys):
    (tmp_path / "hr").mkdir()
    cv2.imwrite(str(tmp_path / "hr" / "a.png"), np.zeros((16, 16, 3), np.uint8))
    rc = segment.main(["--weights", os.path.join(GOLDEN, "sft_net.pth"), "--input", str(tmp_path / "hr"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: the file is an SFT-Net (SFTGAN) model, not a segmenter" and not (tmp_path / "o").exists()


def test_the_segmenter_and_the_discriminator_are_no_generators():
    with pytest.raises(WeightsError, match=r"^the file is an OutdoorSceneSeg segmentation model \(SFTGAN\), not a generator$"):
        jaxsr.load_model(os.path.join(GOLDEN, "outdoor_seg.pth"))
    with pytest.raises(WeightsError, match=r"ACD discriminator.*not a generator"):
        jaxsr.load_model(os.path.join(GOLDEN, "acd.pth"))
    assert "outdoor_seg" not in archs.names() and archs.names("segmenter") == ["outdoor_seg"]


def test_variants_the_references_cannot_build_are_refused_by_name():
    sd = weights.read_state_dict(os.path.join(GOLDEN, "sft_net.pth"))[0]
    three = {**sd, "HR_branch.9.weight": sd["HR_branch.3.weight"]}
    with pytest.raises(WeightsError, match=r"unsupported SFT-Net variant: HR_branch convs at \[0, 3, 6, 8, 9\]"):
        sftgan.infer_spec(three)
    sd = weights.read_state_dict(os.path.join(GOLDEN, "acd.pth"))[0]
    odd = {k: v for k, v in sd.items() if not k.startswith("feature.23.")}
    odd["feature.23.weight"] = sd["feature.2.weight"]
    with pytest.raises(WeightsError, match=r"unsupported ACD discriminator: convs at feature\.\[0, 2, 5, 8, 11, 14, 17, 20, 23\]"):
        acd.infer_spec(odd)
    sd = weights.read_state_dict(os.path.join(GOLDEN, "outdoor_seg.pth"))[0]
    three_stages = {k: v for k, v in sd.items() if not k.startswith("feature.15.proj.")}
    with pytest.raises(WeightsError, match=r"unsupported OutdoorSceneSeg variant: .* with 3 projections"):
        outdoor_seg.infer_spec(three_stages)


def test_arch_auto_resolves_from_a_released_layout_file():
    """--config.model.arch=auto takes the whole spec from an SFTGAN_torch.pth-layout file (training it needs the
    segmentation maps: the sftgan kind's, not the sr kind's)."""
    path = os.path.join(GOLDEN, "sft_net_torch.pth")
    r = subprocess.run([sys.executable, "run_train.py", "--config", "configs/x4.py", "--config.model.arch=auto",
                        f"--config.init_weights={path}", "--print_config"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == {k: v for k, v in {**SFT, "version": "torch"}.items() if k != "scale"}


def test_onnx_takes_the_segmentation_as_a_second_input(golden, tmp_path):
    """One dynamic fp32 file with inputs `input` and `seg` (NCHW, at the output size) gives the reference's output."""
    from jaxsr import deploy

    model, info = jaxsr.load_model(os.path.join(GOLDEN, "sft_net.pth"))
    spec = {"arch": "sftgan", "scale": 4, **info["hyperparameters"]}
    done = deploy.export_onnx(model, spec, tmp_path / "sft.onnx")  # verified in onnxruntime on a photograph
    proto = onnx.load(str(tmp_path / "sft.onnx"))
    assert [i.name for i in proto.graph.input] == ["input", "seg"] and deploy.read_metadata(tmp_path / "sft.onnx")["condition"] == "seg"
    y = deploy.run_onnx(proto.SerializeToString(), golden["sft_lr"], cond=golden["sft_seg"])
    d = float(np.abs(y - golden["sft_net"]).max())
    print(f"SFT-Net ONNX: max |onnxruntime - reference| {d:.2e} (verify: {done.verification.max_abs:.2e} vs jaxsr)")
    assert d <= TOL


def test_image_only_paths_refuse_it_by_name(golden, tmp_path, capsys):
    """upscale() and python -m jaxsr.infer have no second input for the segmentation maps: they say so in one line."""
    from jaxsr import infer

    model, _ = jaxsr.load_model(os.path.join(GOLDEN, "sft_net.pth"))
    with pytest.raises(WeightsError, match=r"^this model takes 'seg' maps besides the image.*call it as model\(x, seg\)"):
        jaxsr.upscale(model, golden["sft_lr"][0].transpose(1, 2, 0))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((16, 16, 3), np.uint8))
    rc = infer.main(["--weights", os.path.join(GOLDEN, "sft_net.pth"), "--input", str(tmp_path / "a.png"), "--output",
                     str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: this model takes 'seg' maps besides the image")


@pytest.mark.parametrize("name, kind", [("outdoor_seg", "segmenter"), ("acd", "discriminator")])
def test_files_saved_before_pytorch_0_4_1_load_without_batchnorm_counters(tmp_path, name, kind):
    """SFTGAN's 2018 releases have no num_batches_tracked: they load (counting from 0, as torch does) to the same
    weights, and export in today's layout."""
    sd = weights.read_state_dict(os.path.join(GOLDEN, f"{name}.pth"))[0]
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(sd)
    weights.write_pth(tmp_path / "old.pth", old)
    model, report = weights.read(tmp_path / "old.pth", kind=kind).build()
    assert report.ok
    ours = archs.get(name).to_torch(model, {})
    assert ours.keys() == sd.keys()
    assert all(np.array_equal(ours[k], sd[k] if k in old else np.zeros((), np.int64)) for k in sd)
