"""config.cpu_kernels='auto' (jaxsr.train.cpu_kernels): where the fastest XLA:CPU kernels depend on the CPU, run_train
times the candidates on the host, caches the choice per host and config, and freezes it into the run's config.json so
that a resume compiles the same programs. The order of the sources (the user's XLA_FLAGS, the config, the run, the
cache, a timing, the family's table entry) with a fake timer; then one real run that times, resumes and reuses."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from conftest import metric_rows, quickly_compiled
from test_archs_train import l1_run
from test_layout import SMALL, perturbed

from jaxsr import parallel, weights
from jaxsr.train import cpu_kernels
from jaxsr.train.config import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def host(monkeypatch, tmp_path):
    """A cache of its own, no user XLA_FLAGS, and the settings put in effect recorded instead of set."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    used, timed = [], []
    monkeypatch.setattr(parallel, "use_cpu_kernels", lambda arch, name=None, why=None: used.append((arch, name, why)))
    monkeypatch.setattr(cpu_kernels, "_accelerator_plugin", lambda: False)

    def timer(seconds):
        def fake(cfg, name, platform, devices):
            timed.append(name)
            t = seconds[name]
            return (t, None) if isinstance(t, float) else (None, t)
        monkeypatch.setattr(cpu_kernels, "_time", fake)

    return used, timed, timer


def config(arch="span", **fields):
    c = base_config()
    c.model = ml_collections.ConfigDict({"arch": arch}, type_safe=False)
    for k, v in fields.items():
        c[k] = v
    return c


def test_a_timing_picks_the_faster_setting_caches_it_per_config_and_a_close_pair_is_timed_twice(host, tmp_path, capsys):
    used, timed, timer = host
    timer({"ynnpack": 1.0, "dots": 0.5})
    assert cpu_kernels.choose(config(), None) == "dots"
    assert capsys.readouterr().out.splitlines()[1:] == ["XLA:CPU: 'ynnpack': 1 s a step", "XLA:CPU: 'dots': 0.5 s a step"]
    assert timed == ["ynnpack", "dots"] and used[-1][:2] == ("span", "dots")
    assert used[-1][2] == "timed on this host: ynnpack 1 s a step, dots 0.5 s a step"
    cache = json.load(open(cpu_kernels.cache_path()))
    (key, entry), = cache.items()
    assert key.startswith(cpu_kernels.host()) and entry["choice"] == "dots" and entry["step_s"] == {"ynnpack": 1.0, "dots": 0.5}
    # the same config again (other fields than the step's changed): from the cache, no timing
    assert cpu_kernels.choose(config(name="other", seed=3), None) == "dots" and timed == ["ynnpack", "dots"]
    assert used[-1][2].startswith("timed on this host before: ynnpack 1 s")
    # another batch is another step: timed again. A win by less than 3% keeps the default after one round; a win by
    # 3-15% is timed once more, in the other order, before it is taken
    for batch, seconds, chosen, rounds in ((8, 0.98, "ynnpack", 1), (6, 0.9, "dots", 2), (10, 1.2, "ynnpack", 1),
                                           (12, 0.8, "dots", 1)):
        timed.clear()
        timer({"ynnpack": 1.0, "dots": seconds})
        other = config()
        other.train.batch_size = batch
        assert cpu_kernels.choose(other, None) == chosen and timed == ["ynnpack", "dots", "dots", "ynnpack"][:2 * rounds]
    assert len(json.load(open(cpu_kernels.cache_path()))) == 5


def test_the_users_flags_the_config_and_the_run_come_before_any_timing(host, tmp_path, monkeypatch):
    used, timed, timer = host
    timer({"ynnpack": 1.0, "dots": 0.5})
    monkeypatch.setenv("XLA_FLAGS", parallel.NO_YNNPACK)
    assert cpu_kernels.choose(config(), None) == "auto" and used[-1] == ("span", None, None)
    monkeypatch.delenv("XLA_FLAGS")
    assert cpu_kernels.choose(config(cpu_kernels="own"), None) == "own" and used[-1] == ("span", "own", "config.cpu_kernels")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"cpu_kernels": "ynnpack"}))
    assert cpu_kernels.choose(config(), str(run)) == "ynnpack" and used[-1][2] == "kept from this run's config.json"
    assert cpu_kernels.choose(config(cpu_kernels="onednn"), str(run)) == "onednn"  # the user changes it on resume
    (run / "config.json").write_text(json.dumps({"model": {}}))  # a run started before the field: the table's entry
    assert cpu_kernels.choose(config(), str(run)) == parallel.CPU_KERNELS["span"]
    assert "records none" in used[-1][2]
    # a family whose kernels were never measured to matter keeps the default, untimed and unsaid
    assert cpu_kernels.choose(config("esrgan"), None) == "ynnpack" and used[-1][1] is None
    assert timed == [] and not os.path.exists(cpu_kernels.cache_path())


def test_what_cannot_be_timed_falls_back_to_the_table_and_says_why(host, tmp_path, monkeypatch):
    used, timed, timer = host
    timer({"ynnpack": 1.0, "dots": "RuntimeError: out of memory"})
    assert cpu_kernels.choose(config(), None) == "dots"
    assert used[-1] == ("span", None, "timing 'dots' failed: RuntimeError: out of memory")
    assert not os.path.exists(cpu_kernels.cache_path())  # nothing cached from a failed timing
    timed.clear()
    for kw, why in ((dict(fast=True), "--fast_dev_run"), (dict(platform="gpu"), "--platform gpu"),
                    (dict(multi=True), "a multi-process run takes the same setting in every process")):
        assert cpu_kernels.choose(config(), None, **kw) == "dots" and used[-1][2] == f"not timed: {why}"
    assert timed == []
    # a cache that does not read is timed again and rewritten; one that cannot be written is said, and the run goes on
    timer({"ynnpack": 0.5, "dots": 1.0})
    os.makedirs(os.path.dirname(cpu_kernels.cache_path()))
    with open(cpu_kernels.cache_path(), "w") as f:
        f.write("{not json")
    assert cpu_kernels.choose(config(), None) == "ynnpack"
    assert list(json.load(open(cpu_kernels.cache_path())).values())[0]["choice"] == "ynnpack"
    # --fast_dev_run takes the cached choice, as the run would; a multi-process run does not (hosts' caches may differ)
    assert cpu_kernels.choose(config(), None, fast=True) == "ynnpack"
    assert cpu_kernels.choose(config(), None, multi=True) == "dots"
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert cpu_kernels.choose(config(), None) == "ynnpack" and "not cached (Not a directory" in used[-1][2]


@pytest.mark.slow
def test_run_train_times_keeps_the_choice_on_resume_and_reuses_it(tmp_path):
    """A tiny SPAN through run_train on the CPU: the two settings timed in their own processes (the run says what each
    took and which it chose), the choice frozen into config.json; a resume keeps it and continues bitwise (its steps equal
    an uninterrupted run's, which takes the choice from the cache)."""
    spec = SMALL["span"]
    init = tmp_path / "span.safetensors"
    weights.export(perturbed(spec), spec, init)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")

    def train(wd, steps):
        args = [a for a in l1_run(init, spec["scale"], 48) if not a.startswith("--config.train.total_steps")]
        r = subprocess.run([sys.executable, "run_train.py", *args, f"--config.train.total_steps={steps}", "--workdir",
                            str(wd), "--platform", "cpu"],  # timed on a CPU even where a GPU plugin is installed
                           cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
        assert r.returncode == 0, r.stderr
        return [line for line in r.stdout.splitlines() if line.startswith("XLA:CPU")]

    with quickly_compiled():
        env.update({k: v for k, v in os.environ.items() if k.startswith("JAX_DISABLE")})
        first = train(tmp_path / "a", 2)
        assert first[0].startswith("XLA:CPU: timing span's train step under 'ynnpack' and 'dots' on this host")
        chosen = json.load(open(tmp_path / "a" / "config.json"))["cpu_kernels"]
        entry, = json.load(open(tmp_path / "cache" / "jaxsr" / "cpu_kernels.json")).values()
        t = entry["step_s"]
        assert entry["choice"] == chosen and set(t) == {"ynnpack", "dots"} and all(s > 0 for s in t.values())
        what = parallel.CPU_KERNEL_SETTINGS[chosen][1]
        progress = [line.split("'")[1] for line in first if line.startswith("XLA:CPU: '")]  # one line per timing
        assert progress in (["ynnpack", "dots"], ["ynnpack", "dots", "dots", "ynnpack"]), first
        assert f"span: {what} (timed on this host: ynnpack {t['ynnpack']:.3g} s a step, dots {t['dots']:.3g} s a step)" in first[-1]
        resumed = train(tmp_path / "a", 4)
        assert f"span: {what} (kept from this run's config.json)" in resumed[0]
        straight = train(tmp_path / "b", 4)
        assert f"span: {what} (timed on this host before:" in straight[0]
    a, b = metric_rows(tmp_path / "a"), metric_rows(tmp_path / "b")
    assert [a[s]["l1"] for s in (3, 4)] == [b[s]["l1"] for s in (3, 4)] and np.isfinite(a[4]["l1"])
