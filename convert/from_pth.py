"""python -m convert.from_pth MODEL.pth|.safetensors OUT_DIR [--arch auto|esrgan|...] [--non-strict]

A shim over `jaxsr.cli.from_pth` (installed: `jaxsr-from-pth`)."""
import sys

from jaxsr.cli import from_pth

if __name__ == "__main__":
    sys.exit(from_pth(prog="python -m convert.from_pth"))
