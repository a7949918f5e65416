"""python -m convert.interpolate A B OUT --alpha 0.3

A shim over `jaxsr.cli.interpolate` (installed: `jaxsr-interpolate`)."""
import sys

from jaxsr.cli import interpolate

if __name__ == "__main__":
    sys.exit(interpolate(prog="python -m convert.interpolate"))
