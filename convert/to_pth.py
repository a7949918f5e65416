"""python -m convert.to_pth SRC OUT.pth|OUT.safetensors

A shim over `jaxsr.cli.to_pth` (installed: `jaxsr-to-pth`)."""
import sys

from jaxsr.cli import to_pth

if __name__ == "__main__":
    sys.exit(to_pth(prog="python -m convert.to_pth"))
