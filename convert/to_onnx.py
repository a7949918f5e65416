"""python -m convert.to_onnx SRC OUT.onnx [--fp16 | --bf16] [--static HxW] [--batch N] [--opset N] [--no-verify]

A shim over `jaxsr.cli.to_onnx` (installed: `jaxsr-to-onnx`)."""
import sys

from jaxsr.cli import to_onnx

if __name__ == "__main__":
    sys.exit(to_onnx(prog="python -m convert.to_onnx"))
