"""Multi-controller training on localhost: 2 processes x 2 CPU devices against 1 process x 4 devices,
checkpoints that move between process counts, and SIGTERM (preemption) leaving a resumable checkpoint."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_train import ROOT, TINY, logged

ARGS = [*TINY, "--config.optim.schedule=constant", "--config.train.ckpt_every=2"]


def env(devices):
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


def one_process(workdir, steps):
    r = subprocess.run([sys.executable, "run_train.py", *ARGS, f"--config.train.total_steps={steps}", "--workdir", str(workdir)],
                       cwd=ROOT, capture_output=True, text=True, env=env(4), timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def two_processes(workdir, steps):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "run_train.py", *ARGS, f"--config.train.total_steps={steps}", "--workdir", str(workdir),
                               f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(2)) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return outs[0][0]


def losses(workdir):
    return {s: r["loss"] for s, r in logged(workdir).items()}


@pytest.mark.slow
def test_two_processes_equal_one_and_checkpoints_move_between_them(tmp_path):
    ref = tmp_path / "ref"
    one_process(ref, 6)
    out = two_processes(tmp_path / "two", 4)
    assert "4 device(s)" in out
    for step in range(1, 5):
        np.testing.assert_allclose(losses(tmp_path / "two")[step], losses(ref)[step], rtol=1e-5)
    # a 2-process checkpoint resumes in 1 process ...
    assert "resumed from step 4" in one_process(tmp_path / "two", 6)
    # ... and a 1-process checkpoint in 2 processes
    one_process(tmp_path / "one", 4)
    assert "resumed from step 4" in two_processes(tmp_path / "one", 6)
    for wd in ("two", "one"):
        for step in (5, 6):
            np.testing.assert_allclose(losses(tmp_path / wd)[step], losses(ref)[step], rtol=1e-5)


def test_sigterm_saves_and_the_rerun_resumes(tmp_path):
    wd = tmp_path / "wd"
    args = [*ARGS, "--config.train.total_steps=200", "--config.train.ckpt_every=1000", "--workdir", str(wd)]
    p = subprocess.Popen([sys.executable, "run_train.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (os.path.exists(wd / "metrics.jsonl") and max(logged(wd), default=0) >= 3):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "SIGTERM: saving a checkpoint at step" in out
    stopped = int(out.split("SIGTERM: saving a checkpoint at step ")[1].split()[0])
    assert 3 <= stopped < 200
    r = subprocess.run([sys.executable, "run_train.py", *args[:-2], "--config.train.total_steps=" + str(stopped + 2), "--workdir", str(wd)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resumed from step {stopped}" in r.stdout


CORES = """
import json, os, sys
import jax
from jaxsr import parallel
n = parallel.use_cpu_cores(int(sys.argv[1]))
print(json.dumps([n, jax.device_count(), len(os.sched_getaffinity(0)), parallel.CPU_CHOICES]))
"""


def test_cpu_host_gets_one_device_per_core_dividing_the_batch():
    """run_train's CPU setting: one XLA:CPU device per core, a divisor of the batch; a user's own count wins."""

    def run(batch, extra_env):
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
        r = subprocess.run([sys.executable, "-c", CORES, str(batch)], cwd=ROOT, capture_output=True, text=True,
                           env={**env, "JAX_PLATFORMS": "cpu", **extra_env}, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.splitlines()[-1])

    for batch in (1, 6, 7, 16):
        n, devices, cores, choices = run(batch, {})
        assert n == devices == max(d for d in range(1, min(cores, batch) + 1) if batch % d == 0)
        assert choices == [f"{n} device(s) for {cores} core(s), the batch of {batch} split over them "
                           "(a device runs its convolutions on about one core)"]
    assert run(4, {"JAX_NUM_CPU_DEVICES": "2"})[:2] == [None, 2]
    assert run(6, {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"})[:2] == [None, 3]
    assert run(6, {"JAX_NUM_CPU_DEVICES": "3"})[:2] == [None, 3]


SCHEDULE_PROBE = """
import hashlib, json, sys
import numpy as np
import jax, jax.numpy as jnp
from jaxsr import parallel
on = parallel.use_memory_schedule(json.loads(sys.argv[1]))  # before any jax computation
from jaxsr import archs
from test_dat_train import _split, _train_step
m = archs.build({"arch": "mosr", "scale": 2, "dim": 16, "n_block": 8, "upsampler": "pixelshuffle", "kernel_size": 7})
m.train()
x, y = jax.random.uniform(jax.random.key(0), (2, 24, 24, 3)), jax.random.uniform(jax.random.key(1), (2, 48, 48, 3))
step = _train_step.trace(*_split(m), x, y).lower().compile()
loss, grads, _ = step(*_split(m), x, y)
digest = hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in [loss, *jax.tree.leaves(grads)])).hexdigest()
print(json.dumps([on, step.memory_analysis().temp_size_in_bytes / 2**20, parallel.CPU_CHOICES, digest]))
"""


def test_memory_schedule_for_remat_and_mosr_and_a_users_flag_wins():
    """run_train's XLA:CPU schedule: the memory-minimising one for remat models and MEMORY_SCHEDULE_ARCHS, said in the
    log; under it a reduced MoSR's train step compiles to fewer temporaries than under the default schedule (the
    reason it is on the list: 0.81x here, 0.72x at full size since the depthwise gradients were written out, 0.29x
    before); the others keep the default; a scheduler flag in the user's XLA_FLAGS wins."""
    from jaxsr.parallel import MEMORY_SCHEDULE, MEMORY_SCHEDULE_ARCHS

    def run(model, flags=None):
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS")}
        env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
        r = subprocess.run([sys.executable, "-c", SCHEDULE_PROBE, json.dumps(model)], cwd=ROOT, capture_output=True,
                           text=True, env={**env, **({"XLA_FLAGS": flags} if flags else {})}, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.splitlines()[-1])

    assert "mosr" in MEMORY_SCHEDULE_ARCHS
    on, low, said, numbers = run({"arch": "mosr"})
    assert on and said == ["the memory-minimising schedule (mosr's train step needs less memory so, as fast)"]
    off, default, said, default_numbers = run({"arch": "esrgan"})
    assert not off and said == []
    print(f"reduced MoSR train step: {default:.1f} MiB of temporaries under the default schedule, {low:.1f} under the memory schedule")
    assert low < 0.9 * default
    assert numbers == default_numbers  # the same operations in another order: the loss and gradients bit for bit
    assert run({"arch": "esrgan", "use_chk": True})[:3:2] == [True, ["the memory-minimising schedule (remat saves memory only under it)"]]
    # the user's scheduler flag wins, either way, and nothing is said
    assert run({"arch": "mosr"}, "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT") == [False, default, [], numbers]
    assert run({"arch": "esrgan"}, MEMORY_SCHEDULE[0])[:3:2] == [True, []]


IN_PLACE_PROBE = """
import hashlib, json, re
import numpy as np
from jaxsr import parallel
on = parallel.use_in_place_updates()  # before any jax computation
import jax
from ml_collections import ConfigDict
from jaxsr.train.config import base_config
from jaxsr.train.kinds import sr
from jaxsr.train.state import split
cfg = base_config()
cfg.model = ConfigDict(dict(arch="esrgan", num_feat=8, num_block=1, num_grow_ch=8))
cfg.degrade.update(mode="bicubic", gt_size=32, queue_size=0)
cfg.train.update(batch_size=2, total_steps=10)
model, _ = sr.build_generator(cfg)
model.train()
objective, (tx, _) = sr.build_objective(cfg), sr.build_optimizers(cfg)
mesh = parallel.make_mesh()
step = sr.build_steps(cfg, mesh, objective, tx, split(model)[0], split(model)[0]).g
state = parallel.replicate(mesh, sr.build_state(cfg, model, tx))
gt = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
batch = parallel.global_batch(mesh, {"gt": gt, "lq": gt.reshape(2, 8, 4, 8, 4, 3).mean((2, 4))})
hlo = step.lower(state, batch, objective.feature_params).compile().as_text()
copies = len(re.findall(r"= [^ ]+ copy\\(%state_opt_state", hlo))
for _ in range(2):
    state, _ = step(state, batch, objective.feature_params)
digest = hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in jax.tree.leaves(state))).hexdigest()
print(json.dumps([on, copies, parallel.CPU_CHOICES, digest]))
"""


def test_in_place_updates_copy_no_optimizer_state_and_change_no_number():
    """run_train's XLA:CPU copy insertion: under XLA's default the compiled train step copies the optimizer's moments
    (the reason for the flag); under region analysis it copies none, the run says so, and two steps leave the state
    bit for bit as the default does; the user's XLA_FLAGS win."""
    from jaxsr.parallel import IN_PLACE_UPDATES

    def run(flags=None):
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS")}
        env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
        r = subprocess.run([sys.executable, "-c", IN_PLACE_PROBE], cwd=ROOT, capture_output=True, text=True,
                           env={**env, **({"XLA_FLAGS": flags} if flags else {})}, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.splitlines()[-1])

    on, copies, said, state = run()
    assert on and copies == 0
    assert said == ["the train state updated in place (copy insertion's region analysis: no copy of the optimizer "
                    "state each step)"]
    off, default_copies, said, default_state = run("--xla_cpu_copy_insertion_use_region_analysis=false")
    assert not off and said == [] and default_copies > 0
    print(f"a tiny RRDB's train step: {default_copies} copies of the optimizer state by default, none in place")
    assert state == default_state
    assert run(IN_PLACE_UPDATES)[:3] == [True, 0, []]


KERNEL_PROBE = """
import json, re, sys
import jax, jax.numpy as jnp
from jaxsr import parallel
flag = parallel.use_cpu_kernels(sys.argv[1], sys.argv[2] or None, "why")
f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) @ w[0, 0])
hlo = f.lower(jnp.ones((2, 32, 32, 64)), jnp.ones((3, 3, 64, 64))).compile().as_text()
on = {lib: sorted(set(re.findall(rf"%{lib}_fusion[.0-9]* = .*op_name=.jit\\(<lambda>\\)/(\\w+)", hlo))) for lib in ("ynn", "onednn")}
print(json.dumps([flag, on["ynn"], on["onednn"], parallel.CPU_CHOICES]))
"""


def test_cpu_kernel_settings_place_the_ops_and_a_users_flag_wins():
    """config.cpu_kernels' settings: each puts the convolution and the matmul where it says (in the compiled program,
    what runs as a YNNPACK or oneDNN fusion) and the run says so; without one, a family of CPU_KERNELS gets its entry
    (run_train's fallback where it does not time them) and the others the default, unsaid; the user's XLA_FLAGS win."""
    from jaxsr.parallel import CPU_KERNEL_SETTINGS, CPU_KERNELS, NO_YNNPACK, ONEDNN_PROBE, YNNPACK

    def run(arch, name="", flags=None):
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS")}
        r = subprocess.run([sys.executable, "-c", KERNEL_PROBE, arch, name], cwd=ROOT, capture_output=True, text=True,
                           env={**env, "JAX_PLATFORMS": "cpu", **({"XLA_FLAGS": flags} if flags else {})}, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.splitlines()[-1])

    conv, dots = ["conv_general_dilated"], ["dot_general"]
    assert run("esrgan") == [None, conv + dots, [], []]  # not in CPU_KERNELS: the default
    placed = {"ynnpack": [conv + dots, []], "dots": [dots, []], "own": [[], []], "onednn": [conv, dots]}  # YNNPACK, oneDNN
    for name, (flag, what) in CPU_KERNEL_SETTINGS.items():
        assert run("esrgan", name) == [flag, *placed[name], [f"esrgan: {what} (why)"]]
    assert run("span") == [CPU_KERNEL_SETTINGS[CPU_KERNELS["span"]][0], *placed[CPU_KERNELS["span"]],
                           [f"span: {CPU_KERNEL_SETTINGS[CPU_KERNELS['span']][1]} (why)"]]
    given = lambda f: [f"the kernels XLA_FLAGS chose ({f})"]  # noqa: E731
    assert run("span", "dots", YNNPACK) == [YNNPACK, conv + dots, [], given(YNNPACK)]  # the default spelled out
    assert run("esrgan", "", NO_YNNPACK) == [NO_YNNPACK, [], [], given(NO_YNNPACK)]
    assert run("hat", "", "--xla_cpu_use_onednn=false") == ["--xla_cpu_use_onednn=false", conv + dots, [], given("--xla_cpu_use_onednn=false")]
    # the probe that keeps the oneDNN setting off where it would do nothing tells: the first flag alone makes no fusion
    bare = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    assert subprocess.run([sys.executable, "-c", ONEDNN_PROBE], capture_output=True, timeout=120,
                          env={**bare, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_use_onednn=true"}).returncode != 0
