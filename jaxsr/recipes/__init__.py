"""The recipes: one Python file per training setup, `get_config()` returning a run config (big_vision style).

From a checkout they are `configs/<name>.py` (configs/ is this folder); an installed jaxsr finds them by name:
`jaxsr-train --config x4`.
"""
