"""Synthetic degradations on the accelerator: Real-ESRGAN second order, bicubic and monochrome (docs/degradations.md)."""
from .ops import imresize, usm_sharp
from .pipeline import (MODES, apply_params, check_queue, default_config, degrade, draw_params, is_mono, mono_validation,
                       queue_apply, queue_init, training_pairs)

__all__ = ["MODES", "apply_params", "check_queue", "default_config", "degrade", "draw_params", "imresize", "is_mono",
           "mono_validation", "queue_apply", "queue_init", "training_pairs", "usm_sharp"]
