"""Training: gradients of the whole model, an optimizer and schedules equal to torch's, fine-tuning.

``loss_and_gradients(model, input_ids, labels=...)`` returns the loss and the gradient of every weight named
as the state dict; ``backward`` holds the backbone's backward pass over plain params (docs/training.md).
"""

from .gradients import ModelParameters, loss_and_gradients, model_parameters
from .optimizer import AdamW, adamw_update, clip_grad_norm
from .schedules import (cosine_schedule_with_warmup, cosine_with_min_lr_schedule_with_warmup,
                        linear_schedule_with_warmup)

__all__ = ["AdamW", "adamw_update", "clip_grad_norm", "cosine_schedule_with_warmup",
           "cosine_with_min_lr_schedule_with_warmup", "linear_schedule_with_warmup", "loss_and_gradients",
           "model_parameters", "ModelParameters"]
