"""Training: gradients of the whole model, an optimizer and schedules equal to torch's, fine-tuning.

``loss_and_gradients(model, input_ids, labels=...)`` returns the loss and the gradient of every weight named
as the state dict; ``backward`` holds the backbone's backward pass over plain params (docs/training.md).
"""

from .gradients import loss_and_gradients

__all__ = ["loss_and_gradients"]
