"""The seeds' workflow (issue: the seeds' remaining workflow): defaults that follow the optimizer chosen, refusals
that --print_config meets too, device choice, TensorBoard off."""
import json
import os

import pytest

from conftest import cli

TINY = ["run_train.py", "--config", "configs/demo.py", "--config.model.num_feat=8", "--config.model.num_block=1",
        "--config.train.batch_size=4", "--config.data.gt_size=32", "--config.degrade.gt_size=32",
        "--config.train.total_steps=2", "--config.train.log_every=1", "--config.val.every=0",
        "--config.val.at_start=False", "--config.optim.warmup_steps=1", "--config.data.val_max_size=96"]


def test_adan_chosen_alone_takes_adans_betas_and_print_config_shows_them():
    for name in ("adan", "adan_schedule_free"):
        more = ["--config.optim.schedule=constant"] if "schedule_free" in name else []
        code, out, err = cli(*TINY, f"--config.optim.name={name}", *more, "--print_config")
        assert code == 0, err
        assert json.loads(out)["optim"]["betas"] == [0.98, 0.92, 0.99]
    code, out, err = cli(*TINY, "--config.optim.name=adan", "--config.optim.betas=(0.9,0.99,0.999)", "--print_config")
    assert code == 0 and json.loads(out)["optim"]["betas"] == [0.9, 0.99, 0.999], err  # the user's own are kept
    code, out, err = cli(*TINY, "--print_config")
    assert code == 0 and json.loads(out)["optim"]["betas"] == [0.9, 0.99], err


@pytest.mark.parametrize("overrides,message", [
    (["--config.optim.name=adan", "--config.optim.betas=(0.9,0.99,0.9,0.9)"], "optim.betas must have 3 values for adan"),
    (["--config.optim.name=adan_schedule_free"], "adan_schedule_free is schedule-free: set optim.schedule='constant'"),
    (["--config.optim.schedule=cosine_restart", "--config.optim.restart_weights=(1.0,)"],
     "optim.restart_weights is for multistep_restart/step_restart"),
    (["--config.optim.warmup=square"], "optim.warmup must be 'linear' or 'cosine'"),
])
def test_what_building_the_optimizers_refuses_print_config_refuses_too(tmp_path, overrides, message):
    code, out, err = cli(*TINY, *overrides, "--print_config")
    assert code == 2 and not out and err.splitlines() == [err.splitlines()[0]] and message in err, err
    code, out, err = cli(*TINY, *overrides, "--workdir", tmp_path / "wd")
    assert code == 2 and message in err, err


def test_platform_cpu_on_one_device_without_tensorboard(tmp_path):
    wd = tmp_path / "wd"
    code, out, err = cli(*TINY, "--platform", "cpu", "--devices", "1", "--config.log.tensorboard=False", "--workdir", wd)
    assert code == 0 and ", 1 device(s), global batch 4" in out, err
    assert not os.path.exists(wd / "tensorboard") and len(open(wd / "metrics.jsonl").readlines()) == 2
    code, out, err = cli(*TINY, "--workdir", tmp_path / "two")  # by default, one XLA:CPU device per core
    assert code == 0 and f", {min(2, len(os.sched_getaffinity(0)))} device(s)" in out and \
        os.listdir(tmp_path / "two" / "tensorboard"), err
    for flags_, message in ((["--platform", "tpu"], "--platform tpu: JAX cannot start it here"),
                            (["--platform", "xpu"], "--platform must be one of cpu, gpu, tpu, got 'xpu'"),
                            (["--devices", "3"], "train.batch_size (4) must be a multiple of the device count (3)")):
        code, out, err = cli(*TINY, *flags_, "--workdir", tmp_path / "refused")
        assert code == 2 and err.splitlines() == [f"error: {err.split('error: ', 1)[1].strip()}"] and message in err, err
