"""python -m convert.to_pth SRC OUT.pth|OUT.safetensors

SRC is a from_pth folder, a jaxsr export or a training workdir. RRDB is written with BasicSR key names
under `params_ema` (Real-ESRGAN, BasicSR, spandrel/chaiNNer load it); other families with their native
keys and every buffer. `.safetensors` holds the flat tensors with the architecture spec in its metadata.
"""
import argparse
import sys

from convert.mapping import WeightsError


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m convert.to_pth", description="Export a jaxsr model to PyTorch weights.")
    p.add_argument("src")
    p.add_argument("out", help="OUT.pth or OUT.safetensors")
    a = p.parse_args(argv)
    from jaxsr.models import export_torch, load_model

    if not a.out.endswith((".pth", ".safetensors")):
        print("error: the output must end in .pth or .safetensors", file=sys.stderr)
        return 2
    try:
        model, info = load_model(a.src)
        spec = {"arch": info["arch"], "scale": info["scale"], **info["hyperparameters"]}
        export_torch(model, spec, a.out)
    except (WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out} ({info['arch']} x{info['scale']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
