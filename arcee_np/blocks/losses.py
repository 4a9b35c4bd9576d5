"""Losses of transformers' Arcee heads: cross-entropy with ignore_index, the shifted causal-LM loss, MSE,
BCE-with-logits, and the sequence-classification, question-answering and token-classification losses."""

from .namespace import array_namespace
from .precision import as_dtype, reduction_dtype

IGNORE_INDEX = -100  # labels with this value are not scored (transformers' ignore_index)


def log_softmax(logits, axis=-1):
    """``s - max s - log(sum exp(s - max s))``. logits: any shape. Returns the same shape."""
    xp = array_namespace(logits)
    shifted = logits - xp.max(logits, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def cross_entropy(logits, labels, ignore_index=IGNORE_INDEX):
    """Mean of ``-log softmax(logits)[label]`` over the rows whose label is not ``ignore_index``.

    Computed in float32 (float64 stays float64), as transformers upcasts logits for the loss. With every
    row ignored the mean is 0/0 = NaN, as in PyTorch.
    logits: [N, C]; labels: [N] integers. Returns a 0-d array.
    """
    xp = array_namespace(logits, labels)
    work = as_dtype(logits, reduction_dtype(xp, logits.dtype))
    counted = labels != ignore_index  # [N]
    safe = xp.where(counted, labels, xp.zeros_like(labels))  # [N] any valid index where ignored
    picked = xp.take_along_axis(log_softmax(work), xp.astype(safe, xp.int64)[:, None], axis=1)[:, 0]  # [N]
    total = xp.sum(xp.where(counted, -picked, xp.zeros_like(picked)))
    return total / xp.sum(xp.astype(counted, work.dtype))


def causal_lm_loss(logits, labels, ignore_index=IGNORE_INDEX):
    """Next-token cross-entropy: logits at position t are scored against ``labels[:, t + 1]``.

    logits: [B, T, V]; labels: [B, T] with ``ignore_index`` where no loss is wanted. Returns a 0-d array.
    """
    xp = array_namespace(logits, labels)
    vocab = logits.shape[-1]
    shifted_logits = xp.reshape(logits[:, :-1, :], (-1, vocab))  # [B*(T-1), V]
    shifted_labels = xp.reshape(labels[:, 1:], (-1,))  # [B*(T-1)]
    return cross_entropy(shifted_logits, shifted_labels, ignore_index)


def mse_loss(prediction, target):
    """Mean squared error ``mean((prediction - target)^2)`` (torch's MSELoss, reduction mean).

    prediction, target: the same shape (any). Returns a 0-d array.
    """
    xp = array_namespace(prediction, target)
    dtype = reduction_dtype(xp, prediction.dtype)
    diff = xp.astype(prediction, dtype) - xp.astype(target, dtype)
    return xp.mean(diff * diff)


def bce_with_logits(logits, targets):
    """Binary cross-entropy on logits, mean over every entry (torch's BCEWithLogitsLoss).

    ``-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]``, computed stably as
    ``max(x, 0) - x y + log(1 + exp(-|x|))``.
    logits, targets: the same shape, e.g. [B, C]; targets in [0, 1]. Returns a 0-d array.
    """
    xp = array_namespace(logits, targets)
    dtype = reduction_dtype(xp, logits.dtype)
    x, y = xp.astype(logits, dtype), xp.astype(targets, dtype)
    return xp.mean(xp.maximum(x, xp.zeros_like(x)) - x * y + xp.log1p(xp.exp(-xp.abs(x))))


def sequence_classification_loss(pooled_logits, labels, problem_type):
    """The loss of sequence classification for a resolved ``problem_type`` (transformers' rules):

    * ``"regression"``: MSE; with one label, of ``pooled[:, 0]`` against ``labels`` flattened to [B];
    * ``"single_label_classification"``: cross-entropy of pooled [B, C] against integer labels [B]
      (-100 ignored);
    * ``"multi_label_classification"``: BCE-with-logits of pooled [B, C] against labels [B, C] in [0, 1].

    pooled_logits: [B, C]. Returns a 0-d array.
    """
    prediction, target, (loss, _) = _sequence_classification_terms(pooled_logits, labels, problem_type)
    return loss(prediction, target)


def _sequence_classification_terms(pooled_logits, labels, problem_type):
    """``(prediction, target, (loss, loss_backward))`` of a problem type, as sequence_classification_loss
    describes it (regression with one label compares flattened [B] vectors, as transformers squeezes both)."""
    xp = array_namespace(pooled_logits, labels)
    if problem_type == "regression":
        if pooled_logits.shape[1] == 1:
            return xp.reshape(pooled_logits, (-1,)), xp.reshape(labels, (-1,)), (mse_loss, mse_loss_backward)
        return pooled_logits, labels, (mse_loss, mse_loss_backward)
    if problem_type == "single_label_classification":
        return pooled_logits, xp.reshape(labels, (-1,)), (cross_entropy, cross_entropy_backward)
    if problem_type == "multi_label_classification":
        return pooled_logits, labels, (bce_with_logits, bce_with_logits_backward)
    raise ValueError(f"unknown problem_type {problem_type!r}; use 'regression', 'single_label_classification' "
                     f"or 'multi_label_classification'.")


def question_answering_loss(start_logits, end_logits, start_positions, end_positions):
    """``(CE(start_logits, start) + CE(end_logits, end)) / 2`` with positions clamped to ``[0, T]``.

    A position at or past ``T`` (the sequence length) becomes ``T`` and is ignored; a batch whose every
    position is ignored gives NaN, as in PyTorch.
    start_logits, end_logits: [B, T]; start_positions, end_positions: [B] (or [B, 1]) integers.
    Returns a 0-d array.
    """
    ignored = start_logits.shape[1]
    start_loss = cross_entropy(start_logits, span_targets(start_positions, ignored), ignore_index=ignored)
    end_loss = cross_entropy(end_logits, span_targets(end_positions, ignored), ignore_index=ignored)
    return (start_loss + end_loss) / 2


def span_targets(positions, length):
    """Question answering's targets: positions flattened to [B] and clamped to [0, T]; T (past the end)
    is the ignore index. positions: [B] or [B, 1] integers; length: T. Returns [B] int64."""
    xp = array_namespace(positions)
    return xp.clip(xp.reshape(xp.astype(positions, xp.int64), (-1,)), 0, length)


def token_classification_loss(logits, labels, ignore_index=IGNORE_INDEX):
    """Cross-entropy of every token against its label; ``ignore_index`` (-100) marks tokens without one.

    logits: [B, T, C]; labels: [B, T] integers. Returns a 0-d array.
    """
    xp = array_namespace(logits, labels)
    classes = logits.shape[-1]
    return cross_entropy(xp.reshape(logits, (-1, classes)), xp.reshape(labels, (-1,)), ignore_index)


# ---------------------------------------------------------------------------------------------- backward
# The backward pass starts at the loss, so each ``*_backward`` takes the loss's inputs and returns
# ``(loss, gradient)``: the loss value (equal to the forward function's) and the gradient of that loss
# with respect to the logits (or predictions), in the logits' dtype.


def cross_entropy_backward(logits, labels, ignore_index=IGNORE_INDEX):
    """cross_entropy and its gradient: ``dlogits = (softmax(logits) - onehot(label)) / n`` on the n counted rows,
    0 on ignored rows (every row ignored: loss NaN, gradient 0, as PyTorch's).

    Computed in float32 (float64 stays float64). logits: [N, C]; labels: [N] integers.
    Returns (loss 0-d, dlogits [N, C]).
    """
    xp = array_namespace(logits, labels)
    work = as_dtype(logits, reduction_dtype(xp, logits.dtype))
    counted = labels != ignore_index  # [N]
    safe = xp.astype(xp.where(counted, labels, xp.zeros_like(labels)), xp.int64)  # [N] any valid index where ignored
    count = xp.sum(xp.astype(counted, work.dtype))
    shifted = work - xp.max(work, axis=-1, keepdims=True)  # [N, C]
    picked = xp.take_along_axis(shifted, safe[:, None], axis=1)[:, 0]  # [N]
    grad = xp.exp(shifted)
    del shifted
    total = xp.sum(grad, axis=-1, keepdims=True)  # [N, 1]
    nll = xp.log(total[:, 0]) - picked
    loss = xp.sum(xp.where(counted, nll, xp.zeros_like(nll))) / count
    scale = xp.where(counted, 1.0 / xp.maximum(count, xp.ones_like(count)), xp.zeros_like(nll))[:, None]  # [N, 1]
    grad *= scale / total  # softmax / n on counted rows
    target = xp.arange(logits.shape[1], dtype=xp.int64)[None, :] == safe[:, None]  # [N, C] one-hot of the label
    grad = xp.where(target, grad - scale, grad)  # minus the one-hot / n
    return loss, xp.astype(grad, logits.dtype, copy=False)


def causal_lm_loss_backward(logits, labels, ignore_index=IGNORE_INDEX):
    """causal_lm_loss and its gradient: the labels shifted left by one and padded with ``ignore_index``
    (as transformers shifts them), so every position's logits take part and the last gets gradient 0.

    logits: [B, T, V]; labels: [B, T]. Returns (loss 0-d, dlogits [B, T, V]).
    """
    xp = array_namespace(logits, labels)
    batch, length, vocab = logits.shape
    pad = xp.full((batch, 1), ignore_index, dtype=labels.dtype)
    shifted_labels = xp.concat([labels[:, 1:], pad], axis=1)  # [B, T]: position t is scored against label t + 1
    loss, grad = cross_entropy_backward(xp.reshape(logits, (-1, vocab)), xp.reshape(shifted_labels, (-1,)),
                                        ignore_index)
    return loss, xp.reshape(grad, (batch, length, vocab))


def mse_loss_backward(prediction, target):
    """mse_loss and its gradient ``2 (prediction - target) / n``. prediction, target: the same shape.
    Returns (loss 0-d, dprediction)."""
    xp = array_namespace(prediction, target)
    dtype = reduction_dtype(xp, prediction.dtype)
    diff = xp.astype(prediction, dtype) - xp.astype(target, dtype)
    grad = (2.0 / diff.size) * diff if diff.size else diff
    return xp.mean(diff * diff), xp.astype(grad, prediction.dtype, copy=False)


def bce_with_logits_backward(logits, targets):
    """bce_with_logits and its gradient ``(sigmoid(x) - y) / n`` (sigmoid from ``exp(-|x|)``, which cannot
    overflow). logits, targets: the same shape. Returns (loss 0-d, dlogits)."""
    xp = array_namespace(logits, targets)
    dtype = reduction_dtype(xp, logits.dtype)
    x, y = xp.astype(logits, dtype), xp.astype(targets, dtype)
    small = xp.exp(-xp.abs(x))
    sigmoid = xp.where(x >= 0, 1.0 / (1.0 + small), small / (1.0 + small))
    loss = xp.mean(xp.maximum(x, xp.zeros_like(x)) - x * y + xp.log1p(small))
    return loss, xp.astype((sigmoid - y) / x.size, logits.dtype, copy=False)


def sequence_classification_loss_backward(pooled_logits, labels, problem_type):
    """sequence_classification_loss and its gradient with respect to the pooled logits.

    pooled_logits: [B, C]; labels and problem_type as for sequence_classification_loss.
    Returns (loss 0-d, dpooled [B, C]).
    """
    xp = array_namespace(pooled_logits, labels)
    prediction, target, (_, loss_backward) = _sequence_classification_terms(pooled_logits, labels, problem_type)
    loss, grad = loss_backward(prediction, target)
    return loss, xp.reshape(grad, pooled_logits.shape)


def question_answering_loss_backward(start_logits, end_logits, start_positions, end_positions):
    """question_answering_loss and its gradients: each side's cross-entropy gradient, halved.

    start_logits, end_logits: [B, T]; positions: [B] (or [B, 1]) integers, clamped to [0, T], T ignored.
    Returns (loss 0-d, dstart [B, T], dend [B, T]).
    """
    ignored = start_logits.shape[1]
    start_loss, d_start = cross_entropy_backward(start_logits, span_targets(start_positions, ignored), ignored)
    end_loss, d_end = cross_entropy_backward(end_logits, span_targets(end_positions, ignored), ignored)
    return (start_loss + end_loss) / 2, d_start / 2, d_end / 2


def token_classification_loss_backward(logits, labels, ignore_index=IGNORE_INDEX):
    """token_classification_loss and its gradient. logits: [B, T, C]; labels: [B, T].
    Returns (loss 0-d, dlogits [B, T, C])."""
    xp = array_namespace(logits, labels)
    classes = logits.shape[-1]
    loss, grad = cross_entropy_backward(xp.reshape(logits, (-1, classes)), xp.reshape(labels, (-1,)), ignore_index)
    return loss, xp.reshape(grad, logits.shape)
