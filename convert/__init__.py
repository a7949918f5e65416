"""The PyTorch bridge's command lines, run from a checkout: `python -m convert.from_pth`, `python -m convert.to_pth`.

Each is a shim over `jaxsr.cli`; the installed package offers the same commands as `jaxsr-from-pth` and
`jaxsr-to-pth`, and installs no `convert` package.
"""
