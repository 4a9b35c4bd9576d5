"""Writing the files of a checkpoint so that an interrupted save never leaves a broken one.

Each file is written under a temporary name in its own folder (``.NAME.<random>.partial``, which loading
never reads), flushed to disk, and moved into place with ``os.replace`` (atomic: a reader sees the old file
or the new one, never a part). ``FolderWrite`` does this for several files and moves them in the order they
were added, removing the files the new ones make stale at their turn: a save killed at any moment leaves
every file old or new, and in the order a checkpoint needs (the weights first, the index and config.json
last) the folder holds the old checkpoint or the new one. The temporary files of an interrupted save are
removed when the next ``FolderWrite`` opens the folder.
"""

from __future__ import annotations

import os
import secrets
import shutil

PARTIAL_SUFFIX = ".partial"


def is_partial(name: str) -> bool:
    """Whether a file name is a temporary file of a FolderWrite (an unfinished or interrupted write)."""
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


class FolderWrite:
    """Files written under temporary names in ``folder`` and moved into place, in the order they were added,
    when the ``with`` block ends without an error (on an error the temporary files are removed).

        with FolderWrite(path) as out:
            write_safetensors(out.add("model.safetensors"), tensors)   # a path to write the file to
            out.write_text("config.json", text)
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        for name in os.listdir(self.folder):  # what an interrupted save left behind
            if is_partial(name):
                os.remove(os.path.join(self.folder, name))
        self.steps: list[tuple[str | None, str]] = []  # (temporary path, final path); None: remove the final path

    def add(self, name: str) -> str:
        """A temporary path to write ``name`` to; it is moved to ``folder/name`` at its turn."""
        temporary = os.path.join(self.folder, f".{name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        self.steps.append((temporary, os.path.join(self.folder, name)))
        return temporary

    def write_text(self, name: str, text: str) -> None:
        """``folder/name`` with ``text`` (UTF-8)."""
        with open(self.add(name), "w", encoding="utf-8") as fh:
            fh.write(text)

    def copy(self, name: str, source: str | os.PathLike) -> None:
        """``folder/name`` as a copy of the file ``source``."""
        shutil.copyfile(source, self.add(name))

    def remove(self, name: str) -> None:
        """Remove ``folder/name`` (if it is there) at this point of the sequence: a file the new ones replace."""
        self.steps.append((None, os.path.join(self.folder, name)))

    def commit(self) -> None:
        """Flush every temporary file to disk, then move them into place (and remove the stale files) in order."""
        for temporary, _ in self.steps:
            if temporary is not None:
                with open(temporary, "rb+") as fh:
                    os.fsync(fh.fileno())
        for temporary, final in self.steps:
            if temporary is None:
                if os.path.lexists(final):
                    os.remove(final)
            else:
                os.replace(temporary, final)
        self.steps = []

    def discard(self) -> None:
        """Remove the temporary files written so far (the folder stays as it was)."""
        for temporary, _ in self.steps:
            if temporary is not None and os.path.exists(temporary):
                os.remove(temporary)
        self.steps = []

    def __enter__(self) -> FolderWrite:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_text_files(folder: str | os.PathLike, files: dict[str, str]) -> None:
    """Write ``{name: text}`` into ``folder`` (created if needed), each file replaced whole, in this order."""
    with FolderWrite(folder) as out:
        for name, text in files.items():
            out.write_text(name, text)
