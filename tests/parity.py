"""The spandrel parity check: one `Row` per architecture configuration (tests/test_parity.py holds the table), one
`check(row, tmp_path)` for all of them, and `perturbed`, our model with every weight moved off its init.

For a row, `check`:
1. builds our model for `row.spec` and moves every exported float variable off its init (`row.prepare` may then set
   what a plain perturbation would not: BatchNorm statistics, weight scales), and runs it on a real-photo crop;
2. exports it as .pth and .safetensors, and loads each in spandrel (chaiNNer's loader): the architecture id, scale,
   channels, tags (and purpose) spandrel reports, and its output on the crop within `row.tol` of ours;
3. checks the .pth is wrapped as the family's trainers wrap it, with contiguous tensors;
4. builds the reference module from `row.reference` (spandrel's class and the row's keyword arguments, with torch's
   init) and loads our .pth into it strictly, as a PyTorch user's script does (for families whose class keeps
   other key names than our export, the state dict spandrel's loader made of it): the same output within `row.tol`;
5. the other way: the reference module's state dict, saved as its trainers save it (in the layout its files hold),
   goes through jaxsr's one load path: the same architecture, the spec's hyperparameters (those the keys show), the
   same output.

torch and spandrel are imported only inside `check`, so that `perturbed` serves tests that run without torch.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
from flax import nnx

from conftest import photo, torch_forward


def perturbed(spec, seed=0, spread=0.01, buffers=True):
    """The model with every exported variable moved off its initial value (integer buffers stay as they are; float
    ones too without `buffers`)."""
    import jax.numpy as jnp

    from jaxsr import archs
    from jaxsr.archs import bridge
    from jaxsr.archs.common import Buffer

    model = archs.build(spec, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    for _, var in bridge.variables(model):
        v = np.asarray(var[...])
        if np.issubdtype(v.dtype, np.floating) and (buffers or not isinstance(var, Buffer)):
            var[...] = jnp.asarray(v + rng.normal(0, spread, v.shape).astype(v.dtype))
    return model


@dataclass(frozen=True)
class Row:
    """One configuration of one architecture, checked against spandrel (see the module docstring)."""

    id: str
    spec: dict  # ours, as archs.build takes it
    reference: tuple  # ("<spandrel.architectures subpackage>.<class>", {keyword arguments}): the same network there
    # (spandrel_extra_arches.architectures for the packages in EXTRA)
    spandrel_id: str  # the architecture id spandrel reports
    crop: dict  # photo(...) arguments: a real photograph, sides no multiple of what the model pads to
    tol: float  # max abs difference of the outputs (fp32, [0, 1] images)
    tags: frozenset = frozenset()  # tags spandrel must report
    exact_tags: bool = False  # ... and no others
    seed: int = 0
    spread: float = 0.01  # std of the perturbation of every float variable
    perturb_buffers: bool = True  # float buffers too (not where they are coordinates spandrel reads, as DAT's)
    prepare: Callable | None = None  # model -> None, after the perturbation
    reference_keys_differ: bool = False  # the reference class names its keys otherwise than our export (ESRGAN's)
    file_keys: Callable | None = None  # the reference module's state dict -> the layout its files hold, where they differ
    crop_torch: bool = False  # torch's output keeps its padding (SwinIR with start_unshuffle): compare its top-left
    unseen: tuple = ()  # spec fields the keys cannot tell, not compared after the round trip
    check: Callable | None = None  # more assertions: (the .pth's state dict, spandrel's model after a forward) -> None


EXTRA = ("SRFormer",)  # references in spandrel_extra_arches (installed into spandrel's registry by conftest)


def plain(v):
    """Tuples as lists, nested: specs compare alike whether they come from code or from JSON."""
    return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def _reference(row):
    import importlib

    path, kwargs = row.reference
    package, name = path.rsplit(".", 1)
    root = "spandrel_extra_arches" if package in EXTRA else "spandrel"
    cls = getattr(importlib.import_module(f"{root}.architectures.{package}"), name)
    return cls(**kwargs)


def _diff(ours, theirs, crop_torch):
    if crop_torch:
        assert all(t >= o for t, o in zip(theirs.shape, ours.shape)), (theirs.shape, ours.shape)
        theirs = theirs[:, : ours.shape[1], : ours.shape[2]]
    assert theirs.shape == ours.shape, (theirs.shape, ours.shape)
    return float(np.abs(theirs - ours).max())


_forward = nnx.jit(lambda model, x: model(x))


def check(row, tmp_path):
    import jax.numpy as jnp
    import spandrel
    import torch

    from jaxsr import archs, weights

    record = archs.get(row.spec["arch"])
    full = record.full_spec(row.spec)
    scale = full["scale"]
    in_ch = full.get("in_ch", 3)
    model = perturbed(row.spec, row.seed, row.spread, row.perturb_buffers)
    if row.prepare is not None:
        row.prepare(model)
    x = photo(**row.crop)
    x = (x.mean(-1, keepdims=True) if in_ch == 1 else x)[None]
    ours = np.asarray(_forward(model, jnp.asarray(x)))
    assert ours.shape == (1, x.shape[1] * scale, x.shape[2] * scale, full.get("out_ch", in_ch))

    # ours -> spandrel, from both formats
    descs = {}
    for ext in (".pth", ".safetensors"):
        path = tmp_path / f"ours{ext}"
        weights.export(model, row.spec, path)
        desc = spandrel.ModelLoader().load_from_file(str(path))
        assert desc.architecture.id == row.spandrel_id, desc.architecture.id
        assert (desc.scale, desc.input_channels, desc.output_channels) == (scale, in_ch, full.get("out_ch", in_ch))
        assert desc.purpose == ("Restoration" if scale == 1 else "SR"), desc.purpose
        tags = set(desc.tags)
        assert tags == row.tags if row.exact_tags else row.tags <= tags, desc.tags
        d = _diff(ours, torch_forward(desc.model, x), row.crop_torch)
        print(f"{row.id}{ext}: spandrel {desc.architecture.id} x{desc.scale} tags {desc.tags}, max|diff| {d:.2e}")
        assert d <= row.tol, (ext, d)
        descs[ext] = desc

    # the .pth as the family's trainers wrap it, loaded strictly into the reference module
    saved = torch.load(tmp_path / "ours.pth", map_location="cpu", weights_only=True)
    if record.pth_wrapper:
        assert [k for k in saved if k != "metadata"] == [record.pth_wrapper], list(saved)
        saved = saved[record.pth_wrapper]
    assert all(type(t) is torch.Tensor and t.is_contiguous() for t in saved.values())
    reference = _reference(row)
    reference.load_state_dict(descs[".pth"].model.state_dict() if row.reference_keys_differ else saved, strict=True)
    d = _diff(ours, torch_forward(reference, x), row.crop_torch)
    print(f"{row.id}: {row.reference[0]}(**kwargs) with our .pth, max|diff| {d:.2e}")
    assert d <= row.tol, d
    if row.check is not None:
        row.check(saved, descs[".pth"].model)

    # the reference's own file -> jaxsr
    sd = reference.state_dict() if row.file_keys is None else row.file_keys(reference.state_dict())
    theirs = tmp_path / "theirs.pth"
    torch.save({record.pth_wrapper: sd} if record.pth_wrapper else sd, theirs)
    w = weights.read(theirs, kind=record.kind)
    assert w.arch is record
    for k, v in w.spec.items():
        if k in full and k not in row.unseen:
            assert plain(v) == plain(full[k]), (k, v, full[k])
    back, report = w.build()
    assert report.ok, report.summary()
    d = float(np.abs(np.asarray(_forward(back, jnp.asarray(x))) - ours).max())
    assert d <= row.tol, d
