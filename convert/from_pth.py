"""python -m convert.from_pth MODEL.pth|.safetensors OUT_DIR [--arch auto|esrgan|...] [--non-strict]

Writes jaxsr's own weights (OUT_DIR/weights.safetensors, Flax layouts) and OUT_DIR/spec.json, so that
training elsewhere needs no torch. Prints what it detected.
"""
import argparse
import json
import sys

from convert import pthfile, registry
from convert.mapping import WeightsError


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m convert.from_pth", description=__doc__.split("\n\n")[1])
    p.add_argument("model", help=".pth/.pt/.ckpt/.safetensors")
    p.add_argument("out_dir")
    p.add_argument("--arch", default="auto", help="auto (default) or one of: " + ", ".join(b.arch for b in registry.bridges()))
    p.add_argument("--non-strict", action="store_true", help="load what matches and report missing/unexpected tensors")
    a = p.parse_args(argv)
    from jaxsr.models import from_state_dict, save_native

    try:
        sd, _ = pthfile.read_state_dict(a.model)
        model, spec, report = from_state_dict(sd, arch=a.arch, strict=not a.non_strict)
        save_native(a.out_dir, model, spec)
    except (WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hyper = {k: v for k, v in spec.items() if k not in ("arch", "scale")}
    print(f"architecture: {spec['arch']}\nscale: {spec['scale']}\nhyperparameters: {json.dumps(hyper)}")
    if not report.ok:
        print(f"non-strict load: {report.summary()}")
    print(f"wrote {a.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
