"""Names that moved in the one-forward redesign still import, with a DeprecationWarning naming the new place;
names that stayed public where they were import without one."""

import importlib
import warnings

import numpy as np
import pytest

from conftest import small_config

MOVED = [("arcee_np.backend", "is_wide", "arcee_np.blocks.precision.product_dtype"),
         ("arcee_np.blocks.linear", "ROW_TILE_ELEMENTS", "arcee_np.blocks.stored.ROW_TILE_ELEMENTS"),
         ("arcee_np.blocks.linear", "row_tile", "arcee_np.blocks.stored.row_tile"),
         ("arcee_np.blocks.linear", "tiled_product", "arcee_np.blocks.stored.StoredMatrix.product"),
         ("arcee_np.blocks.linear", "tiled_input_gradient", "arcee_np.blocks.stored.StoredMatrix.input_gradient"),
         ("arcee_np.model", "mask_and_rope_tables", "arcee_np.blocks.mask.step_mask")]


@pytest.mark.parametrize("module, name, new", MOVED)
def test_moved_names_warn_and_name_the_new_place(module, name, new):
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        getattr(importlib.import_module(module), name)


def test_the_moved_functions_still_compute_what_they_did():
    from arcee_np.blocks.mask import step_mask
    from arcee_np.blocks.rope import rope_tables

    with pytest.warns(DeprecationWarning):
        from arcee_np.backend import is_wide
        from arcee_np.model import mask_and_rope_tables
    assert is_wide(np, np.float32) and is_wide(np, np.float64) and not is_wide(np, np.float16)
    config = small_config()
    h = np.zeros((2, 5, config.hidden_size), dtype=np.float32)
    mask, cos, sin = mask_and_rope_tables(h, config, None, None, 0, False)
    positions = np.broadcast_to(np.arange(5)[None, :], (2, 5))
    assert np.array_equal(mask.additive(), step_mask(h, None, positions, 0, False).additive())
    tables = rope_tables(positions, config.head_dim, config.rope_theta, config.rope_scaling, h.dtype)
    assert np.array_equal(cos, tables[0]) and np.array_equal(sin, tables[1])


def test_names_that_stayed_import_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from arcee_np.model import StepMask, backbone, decoder_layer, step_mask  # noqa: F401 (notebooks' exercises)
        from arcee_np.models import (ArceeForQuestionAnswering, ArceeForSequenceClassification,  # noqa: F401
                                     ArceeForTokenClassification, ArceePreTrainedModel)
        from arcee_np.io.gguf import GGUFMetadata, is_gguf, read_metadata  # noqa: F401
        from arcee_np.blocks import StoredMatrix, is_stored, reduction_dtype  # noqa: F401
