"""The PyTorch bridge's command lines, run from a checkout: `python -m convert.from_pth`, `convert.to_pth`,
`convert.to_onnx` and `convert.interpolate`.

Each is a shim over `jaxsr.cli`; the installed package offers the same commands as `jaxsr-from-pth`, `jaxsr-to-pth`,
`jaxsr-to-onnx` and `jaxsr-interpolate`, and installs no `convert` package.
"""
