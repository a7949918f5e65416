"""Optimizers and learning-rate schedules from a config section (`config.optim`, `config.optim_d`).

`schedules` decides the lr each update applies (table `SCHEDULES`, warm-up, ReduceLROnPlateau, reading and feeding
it in an optimizer state); `optimizers` builds the optax chain that applies it (Adan, schedule-free, FreezeD, float16
loss scaling, EMA). Each module's docstring documents the config fields it reads; `default_config()` has them all.
"""
from jaxsr.optim.optimizers import (
    ADAM_BETAS,
    ADAN_BETAS,
    NAMES,
    SCHEDULE_FREE,
    LossScaleState,
    ResetState,
    ScaleByAdanState,
    adan,
    adan_schedule_free,
    betas_for,
    block_count,
    build_optimizer,
    default_config,
    dynamic_loss_scale,
    ema_update,
    eval_params,
    frozen_blocks,
    is_schedule_free,
    loss_scale_state,
    reset_at,
    scale_by_adan,
    scale_loss,
    schedule_free_adamw,
)
from jaxsr.optim.schedules import (
    SCHEDULES,
    DescendState,
    PlateauState,
    ReduceLROnPlateau,
    _find,
    current_lr,
    feed_plateau,
    learning_rate_schedule,
    lr_scale,
    plateau_rule,
    rescale_plateau,
    with_warmup,
)

__all__ = [
    "ADAM_BETAS", "ADAN_BETAS", "NAMES", "SCHEDULE_FREE", "SCHEDULES", "DescendState", "LossScaleState", "PlateauState",
    "ReduceLROnPlateau", "ResetState", "ScaleByAdanState", "adan", "adan_schedule_free", "betas_for", "block_count", "build_optimizer", "current_lr",
    "default_config", "dynamic_loss_scale", "ema_update", "eval_params", "feed_plateau", "frozen_blocks",
    "is_schedule_free", "learning_rate_schedule", "loss_scale_state", "lr_scale", "plateau_rule", "rescale_plateau", "reset_at",
    "scale_by_adan", "scale_loss", "schedule_free_adamw", "with_warmup",
]
