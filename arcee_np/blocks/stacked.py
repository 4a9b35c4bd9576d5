"""Weights stacked as consecutive rows of one array, so that their products run as one.

Attention's q, k and v projections all multiply the same input. When their weights are the row ranges of
one ``[out_q + out_k + out_v, in]`` array, ``x @ stack.T`` gives all three products in one call that
reads ``x`` once and the weights in one sweep: a decode step (blocks/linear.py ``linear_stacked``) makes
two fewer calls a layer, and its small k and v products no longer run on a single BLAS thread
(docs/performance.md). The loaded models stack them
this way (``pretrained.py``); every other holder of the weights sees three ordinary arrays, because they
*are* three arrays: views of the stack, saved, traced and changed like any other.

A stack is recognised by identity, never guessed from memory addresses: ``stack_rows`` records the views it
made, and ``row_stack_of`` answers only for exactly those views, in their order. A weight replaced by a new
array (an optimizer step, a user's ablation) is not one of them, and the products run one by one again.
"""

import weakref

from .namespace import array_namespace

# id(stack) -> (a weak reference to the stack, weak references to the row views stack_rows made, in order).
# An entry leaves with its stack.
_STACKS: dict = {}


def stack_rows(weights) -> list:
    """The ``weights`` copied into one new array, returned as its consecutive row views, in order.

    weights: 2-D arrays [out_i, in] of one dtype, namespace and width ``in``. Returns a list of views
    [out_i, in], equal to the weights, that ``row_stack_of`` recognises.
    """
    xp = array_namespace(*weights)
    stack = xp.concat(list(weights), axis=0)  # [sum out_i, in]
    views, start = [], 0
    for weight in weights:
        views.append(stack[start:start + weight.shape[0], :])
        start += weight.shape[0]
    key = id(stack)
    _STACKS[key] = (weakref.ref(stack, lambda _, key=key: _STACKS.pop(key, None)),
                    tuple(weakref.ref(view) for view in views))
    return views


def row_stack_of(weights):
    """The array [sum out_i, in] whose row views (made by ``stack_rows``) the ``weights`` are, in this
    order, or None when they are anything else (separate arrays, other views, stored weights)."""
    entry = _STACKS.get(id(getattr(weights[0], "base", None)))
    if entry is None:
        return None
    stack, views = entry[0](), entry[1]
    if len(views) != len(weights) or any(view() is not weight for view, weight in zip(views, weights, strict=True)):
        return None
    return stack
