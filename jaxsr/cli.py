"""The PyTorch bridge's command lines. From a checkout they run as `python -m convert.from_pth` and
`python -m convert.to_pth` (thin shims in convert/); an installed jaxsr has them as `jaxsr-from-pth` and
`jaxsr-to-pth`."""
import argparse
import json
import sys

from jaxsr import archs, weights
from jaxsr.errors import WeightsError


def from_pth(argv=None, prog="jaxsr-from-pth"):
    """MODEL.pth|.safetensors OUT_DIR: jaxsr's own weights (OUT_DIR/weights.safetensors, Flax layouts) and
    OUT_DIR/spec.json, so that training elsewhere needs no torch. Prints what it detected."""
    p = argparse.ArgumentParser(prog=prog, description="Convert PyTorch weights into jaxsr's own format (no torch needed to read them).")
    p.add_argument("model", help=".pth/.pt/.ckpt/.safetensors")
    p.add_argument("out_dir")
    p.add_argument("--arch", default="auto", help="auto (default) or one of: " + ", ".join(archs.names()))
    p.add_argument("--non-strict", action="store_true", help="load what matches and report missing/unexpected tensors")
    a = p.parse_args(argv)
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
    if not a.out.endswith((".pth", ".safetensors")):
        print("error: the output must end in .pth or .safetensors", file=sys.stderr)
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
