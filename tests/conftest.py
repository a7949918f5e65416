"""Shared test fixtures: real photographs and the PyTorch reference (spandrel) behind a torchvision stub."""
import contextlib
import enum
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import pytest


def _stub_torchvision():
    """spandrel imports torchvision at import time for two archs we never use; no CPU torchvision exists here."""
    if "torchvision" in sys.modules:
        return
    tv, tr, fn = (types.ModuleType(n) for n in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"))

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    def _unavailable(*args, **kwargs):
        raise RuntimeError("torchvision stub: not available in tests")

    fn.InterpolationMode = InterpolationMode
    fn.rotate = fn.normalize = _unavailable
    tv.transforms, tr.functional = tr, fn
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn})


_stub_torchvision()


def _spandrel_extra_arches():
    """SRFormer's reference lives in spandrel_extra_arches, which chaiNNer installs into spandrel's registry; so do we."""
    try:
        import spandrel_extra_arches
    except ImportError:
        return
    spandrel_extra_arches.install()

try:
    import torch  # noqa: F401
    HAS_TORCH = True
    _spandrel_extra_arches()
except ImportError:
    HAS_TORCH = False
NEEDS_TORCH = ("import torch", "spandrel", "torch_forward")  # what marks a test file as a PyTorch reference test


class _SkippedFile(pytest.File):
    """Stands for a test file that needs torch where none is installed: one skipped item, with the reason."""

    def collect(self):
        yield _Skipped.from_parent(self, name="needs torch")


class _Skipped(pytest.Item):
    def runtest(self):
        pytest.skip("needs torch, which is not installed here (setup.sh installs the CPU build where one exists): "
                    "the PyTorch reference tests need it, jaxsr does not")

    def reportinfo(self):
        return self.path, None, self.name


def pytest_pycollect_makemodule(module_path, parent):
    if not HAS_TORCH and module_path.name != "conftest.py" and any(m in module_path.read_text() for m in NEEDS_TORCH):
        return _SkippedFile.from_parent(parent, path=module_path)
    return None


def pytest_configure(config):
    """One XLA compilation cache for the whole run, which xdist's workers and every process a test starts inherit
    (env): a program that took 0.3 s or more to compile is read back wherever it is compiled again. JAX keys it on
    the program, the compile options (jax_disable_most_optimizations included) and XLA_FLAGS as the environment
    holds them (jaxsr.parallel sets them only before a backend starts), so no number can differ. The size cap turns
    on JAX's file lock for concurrent processes; the floor keeps out the eager ops' thousands of tiny programs,
    since the lock's size check lists the whole cache at every write. A cache the caller set is used and kept
    (empty: none)."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config.xla_cache = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxsr-tests-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
    # run_train's per-host choice of XLA:CPU kernels (jaxsr.train.cpu_kernels) caches under it: not the user's
    if "JAXSR_TESTS_CACHE" not in os.environ:  # set once, by the process xdist's workers inherit it from
        config.xdg_cache = os.environ["JAXSR_TESTS_CACHE"] = tempfile.mkdtemp(prefix="jaxsr-tests-cache-")
    os.environ["XDG_CACHE_HOME"] = os.environ["JAXSR_TESTS_CACHE"]


def pytest_unconfigure(config):
    for made in ("xla_cache", "xdg_cache"):  # the folders this run made (not a caller's)
        if getattr(config, made, None):
            shutil.rmtree(getattr(config, made), ignore_errors=True)


def pytest_collection_modifyitems(items):
    """Tests marked slow (minutes each) first: pytest-xdist hands tests out in this order, and one handed out last
    keeps the run waiting on it while the other workers sit idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def photo(name="astronaut", h=None, w=None, top=0, left=0):
    """A real photograph from scikit-image as HxWx3 float32 in [0,1], optionally cropped."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3].astype(np.float32) / 255.0
    h = h or img.shape[0] - top
    w = w or img.shape[1] - left
    return np.ascontiguousarray(img[top : top + h, left : left + w])


@pytest.fixture
def spandrel():
    import spandrel as sp

    return sp


@pytest.fixture(scope="session")
def vgg19_file(tmp_path_factory):
    """A random VGG19 in torchvision's layout (`features.N.weight/bias`, .safetensors), made without torch: enough for
    the perceptual loss of a recipe to build and train; tests that compare with torch write their own."""
    from flax import nnx

    from jaxsr.archs.bridge import state_dict
    from jaxsr.losses.perceptual import VGG19Features
    from jaxsr.weights import write_safetensors

    path = tmp_path_factory.mktemp("vgg") / "vgg19.safetensors"
    write_safetensors(path, state_dict(VGG19Features(rngs=nnx.Rngs(0))))
    return str(path)


@contextlib.contextmanager
def quickly_compiled():
    """XLA without most of its optimisations, for tiny models that compile more than they run (a step program runs a
    few times, compiles once). JAX's in-memory caches do not key on the flag (its persistent cache does), so the
    executables compiled under it are dropped afterwards; subprocesses (run_train.py, the CLIs) get it as
    JAX_DISABLE_MOST_OPTIMIZATIONS=1."""
    import jax

    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
            yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        jax.clear_caches()


@pytest.fixture(scope="module")
def quick_compiles():
    """quickly_compiled() for a whole module."""
    with quickly_compiled():
        yield


@pytest.fixture
def quick_compiles_one_test():
    """quickly_compiled() for one test of a module whose other tests need XLA's optimisations."""
    with quickly_compiled():
        yield


def metric_rows(workdir, key="loss"):
    """{step: row} of a run's metrics.jsonl, the rows that have `key`."""
    import json

    return {r["step"]: r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if key in r}


def torch_forward(module, img_nhwc):
    """Run a torch module on an NHWC numpy batch, return NHWC numpy (float32, no grad)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(img_nhwc.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        y = module.eval()(x)
    return y.numpy().transpose(0, 2, 3, 1)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=600):
    """(exit code, stdout, stderr) of `python ARGS...` run in the checkout, asserting that nothing printed a traceback."""
    r = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    return r.returncode, r.stdout, r.stderr


def interrupt(cmd, workdir, cwd=ROOT, sig=signal.SIGINT):
    """Start a training command, press Ctrl-C (or send `sig`) once it has logged a step and waited a second; (exit
    code, out, err)."""
    p = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err
