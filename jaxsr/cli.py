"""The PyTorch bridge's command lines, the ONNX export and model interpolation. From a checkout they run as
`python -m convert.from_pth`, `convert.to_pth`, `convert.to_onnx` and `convert.interpolate` (thin shims in convert/);
an installed jaxsr has them as `jaxsr-from-pth`, `jaxsr-to-pth`, `jaxsr-to-onnx` and `jaxsr-interpolate`."""
import argparse
import json
import os
import sys

from jaxsr import archs, weights
from jaxsr.errors import WeightsError, warnings_as_lines


def from_pth(argv=None, prog="jaxsr-from-pth"):
    """MODEL.pth|.safetensors OUT_DIR: jaxsr's own weights (OUT_DIR/weights.safetensors, Flax layouts) and
    OUT_DIR/spec.json, so that training elsewhere needs no torch. Prints what it detected."""
    p = argparse.ArgumentParser(prog=prog, description="Convert PyTorch weights into jaxsr's own format (no torch needed to read them).")
    p.add_argument("model", help=".pth/.pt/.ckpt/.safetensors")
    p.add_argument("out_dir")
    p.add_argument("--arch", default="auto", help="auto (default) or one of: " + ", ".join(archs.names()))
    p.add_argument("--non-strict", action="store_true", help="load what matches and report missing/unexpected tensors")
    a = p.parse_args(argv)
    warnings_as_lines()
    try:
        w = weights.read(a.model, arch=a.arch)
        model, report = w.build(strict=not a.non_strict)
        weights.save_native(a.out_dir, model, w.spec)
    except (WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hyper = {k: v for k, v in w.spec.items() if k not in ("arch", "scale")}
    print(f"architecture: {w.spec['arch']}\nscale: {w.spec['scale']}\nhyperparameters: {json.dumps(hyper)}")
    if not report.ok:
        print(f"non-strict load: {report.summary()}")
    print(f"wrote {a.out_dir}")
    return 0


def to_pth(argv=None, prog="jaxsr-to-pth"):
    """SRC OUT.pth|OUT.safetensors. SRC is a from_pth folder, a jaxsr export or a training workdir. RRDB is written
    with BasicSR key names under `params_ema` (Real-ESRGAN, BasicSR, spandrel/chaiNNer load it); other families
    with their native keys and every buffer. `.safetensors` holds the flat tensors with the spec in its metadata."""
    p = argparse.ArgumentParser(prog=prog, description="Export a jaxsr model to PyTorch weights.")
    p.add_argument("src", help="a from_pth folder, a jaxsr export (.pth/.safetensors) or a training workdir")
    p.add_argument("out", help="OUT.pth or OUT.safetensors")
    a = p.parse_args(argv)
    warnings_as_lines()
    if not a.out.endswith((".pth", ".safetensors")):
        print("error: the output must end in .pth or .safetensors", file=sys.stderr)
        return 2
    src, out = os.path.realpath(a.src), os.path.realpath(a.out)
    if out == src or (os.path.isdir(src) and os.path.exists(out) and os.path.commonpath([src, out]) == src):
        print(f"error: {a.out} is {'the source' if out == src else 'a file of the source folder'} {a.src}: writing it "
              "would replace what is read or was exported there; give a new output path", file=sys.stderr)
        return 2
    try:
        w = weights.read(a.src)
        model, _ = w.build()
        weights.export(model, w.spec, a.out)
    except (WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out} ({w.spec['arch']} x{w.spec['scale']})")
    return 0


def _size(v):
    try:
        h, w = (int(t) for t in v.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 256x256), not {v!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"the static size must be positive, not {v!r}")
    return h, w


def to_onnx(argv=None, prog="jaxsr-to-onnx"):
    """SRC OUT.onnx: the generator as ONNX (NCHW float RGB in [0, 1] -> x scale, batch/height/width dynamic), checked
    by onnx.checker and run in onnxruntime against jaxsr on a photograph before the file is written."""
    p = argparse.ArgumentParser(prog=prog, description="Export a jaxsr or PyTorch SR generator to ONNX (onnxruntime, chaiNNer).")
    p.add_argument("src", help="a .pth/.safetensors, a from_pth folder, a jaxsr export or a training workdir")
    p.add_argument("out", help="OUT.onnx")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="float16 weights and compute (input/output stay float32)")
    prec.add_argument("--bf16", action="store_true", help="bfloat16 weights and compute (opset >= 22; onnxruntime's CPU cannot run it)")
    p.add_argument("--static", type=_size, metavar="HxW", help="a fixed input height and width (default: dynamic)")
    p.add_argument("--batch", type=int, metavar="N", help="a fixed batch size (default: dynamic)")
    p.add_argument("--opset", type=int, metavar="N", help="ONNX opset, 17 to 23 (default 17; 22 with --bf16)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check on a photograph")
    a = p.parse_args(argv)
    warnings_as_lines()
    if not a.out.endswith(".onnx"):
        print("error: the output must end in .onnx", file=sys.stderr)
        return 2
    folder = os.path.dirname(os.path.abspath(a.out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        print(f"error: cannot write {a.out}: {folder} is not a writable folder", file=sys.stderr)
        return 2
    from jaxsr import deploy

    try:
        w = weights.read(a.src)
        model, _ = w.build()
        done = deploy.export_onnx(model, w.spec, a.out, fp16=a.fp16, bf16=a.bf16, static=a.static, batch=a.batch,
                                  opset=a.opset, verify=not a.no_verify)
    except (WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dyn = "dynamic " + "/".join(done.dynamic) if done.dynamic else "all sizes fixed"
    print(f"wrote {a.out} ({w.spec['arch']} x{w.spec['scale']}, {done.precision}, opset {done.opset}, {dyn}, "
          f"{done.nbytes / 2**20:.1f} MiB)")
    if done.verification is not None:
        print(done.verification.line())
    return 0


def interpolate(argv=None, prog="jaxsr-interpolate"):
    """A B OUT --alpha X: (1 - X) * A + X * B of two weight files of one architecture and spec (ESRGAN's network
    interpolation), written as .pth/.safetensors (PyTorch users) or a jaxsr folder (an OUT without extension)."""
    p = argparse.ArgumentParser(prog=prog, description="Blend two weight files of the same architecture and spec.")
    p.add_argument("a", help="the first model (alpha 0 gives it back): any file, folder or workdir load_model reads")
    p.add_argument("b", help="the second model (alpha 1 gives it back)")
    p.add_argument("out", help="OUT.pth, OUT.safetensors or a folder for jaxsr's own format")
    p.add_argument("--alpha", type=float, required=True, help="weight of B, e.g. 0.3 (0 = A, 1 = B)")
    a = p.parse_args(argv)
    warnings_as_lines()
    if not 0.0 <= a.alpha <= 1.0:
        print(f"error: --alpha must lie in [0, 1], got {a.alpha}", file=sys.stderr)
        return 2
    try:
        model, spec = weights.interpolate(a.a, a.b, a.alpha)
        if a.out.endswith((".pth", ".safetensors")):
            weights.export(model, spec, a.out)
        else:
            weights.save_native(a.out, model, spec)
    except (WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out} ({spec['arch']} x{spec['scale']}: {1 - a.alpha:g} x {a.a} + {a.alpha:g} x {a.b})")
    return 0
