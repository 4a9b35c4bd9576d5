"""An interrupted save never leaves a broken checkpoint: a child process saving model B over a good copy of
model A is killed (SIGKILL, from inside the save, at every step of it: in the middle of writing each file,
and before each file is moved into place or each stale file removed); the folder then loads and gives A's
logits or B's. The temporary files it leaves are never read, and the next save removes them."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import arcee_np.io.atomic as atomic
import arcee_np.io.checkpoint as checkpoint
from arcee_np import ArceeForCausalLM

from conftest import random_model, small_config

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks a child process")

IDS = np.array([[1, 5, 9, 3, 7]])
SHARD = 20_000  # bytes: the small model in several shards


def save_killed(model, folder, max_shard_size, kill_at: str, step: int) -> bool:
    """Fork a child that saves ``model`` into ``folder`` and SIGKILLs itself at ``step`` (1, 2, ...) of kind
    ``kill_at``: "write" (the step-th file half written) or "move" (before the step-th replace/remove).
    Returns True when the child was killed, False when the save had fewer steps and completed."""
    pid = os.fork()
    if pid == 0:  # the child: the hooks exist only here
        try:
            count = [0]

            def die_at_step():
                count[0] += 1
                if count[0] == step:
                    os.kill(os.getpid(), signal.SIGKILL)

            if kill_at == "write":
                real_write = checkpoint.write_safetensors

                def half_written(path, tensors, metadata=None):
                    real_write(path, tensors, metadata)
                    with open(path, "rb+") as fh:
                        fh.truncate(os.path.getsize(path) // 2)
                    die_at_step()

                checkpoint.write_safetensors = half_written
            else:
                real_replace, real_remove = os.replace, os.remove

                def replace(src, dst):
                    die_at_step()
                    real_replace(src, dst)

                def remove(path):
                    if not atomic.is_partial(os.path.basename(path)):
                        die_at_step()
                    real_remove(path)

                os.replace, os.remove = replace, remove
            model.save_pretrained(folder, max_shard_size=max_shard_size)
            os._exit(0)
        except BaseException:  # noqa: BLE001 - the child reports any failure by its exit status
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the save failed in the child"
    return False


def logits_of(folder) -> np.ndarray:
    return ArceeForCausalLM.from_pretrained(folder)(IDS).logits


@pytest.mark.parametrize("old_shards, new_shards", [(None, None), (SHARD, SHARD), (None, SHARD), (SHARD, None)],
                         ids=["single-over-single", "shards-over-shards", "shards-over-single", "single-over-shards"])
def test_a_save_killed_at_any_step_leaves_the_old_checkpoint_or_the_new(tmp_path, old_shards, new_shards):
    config = small_config()
    old, new = random_model(config, seed=1), random_model(config, seed=2)
    new.generation_config = {"eos_token_id": 2, "max_new_tokens": 7}
    folder = tmp_path / "ckpt"
    old.save_pretrained(folder, max_shard_size=old_shards)
    old_logits, new_logits = logits_of(folder), new(IDS).logits
    assert not np.array_equal(old_logits, new_logits)
    outcomes = []
    for kill_at in ("write", "move"):
        for step in range(1, 40):
            old.save_pretrained(folder, max_shard_size=old_shards)  # a good copy of A (and no leftovers)
            if not save_killed(new, folder, new_shards, kill_at, step):
                break
            got = logits_of(folder)
            assert np.array_equal(got, old_logits) or np.array_equal(got, new_logits), (kill_at, step)
            outcomes.append("new" if np.array_equal(got, new_logits) else "old")
        else:
            pytest.fail("the save never completed")
    assert "old" in outcomes and "new" in outcomes  # the kills fell before and after the switch
    np.testing.assert_array_equal(logits_of(folder), new_logits)  # the last, completed save


def test_leftovers_are_never_read_and_the_next_save_removes_them(tmp_path):
    old, new = random_model(seed=1), random_model(seed=2)
    folder = tmp_path / "ckpt"
    old.save_pretrained(folder)
    assert save_killed(new, folder, None, "write", 1)
    partial = [name for name in os.listdir(folder) if atomic.is_partial(name)]
    assert len(partial) == 1 and partial[0].startswith(".model.safetensors.")  # half a file, under its own name
    np.testing.assert_array_equal(logits_of(folder), old(IDS).logits)
    new.save_pretrained(folder)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    np.testing.assert_array_equal(logits_of(folder), new(IDS).logits)


def test_a_sharded_save_removes_the_files_of_the_checkpoint_it_replaces(tmp_path):
    model = random_model()
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder, max_shard_size=SHARD)
    first = set(os.listdir(folder))
    model.save_pretrained(folder, max_shard_size=SHARD)  # the usual shard names are in use: others are taken
    second = set(os.listdir(folder))
    assert "model.safetensors.index.json" in second and len(second) == len(first)
    model.save_pretrained(folder)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    np.testing.assert_array_equal(logits_of(folder), model(IDS).logits)
