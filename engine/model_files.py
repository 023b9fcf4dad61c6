"""The files of a model folder kind (`checkpoints`, `loras`, ...): one walker for the node choices and the
server's model listing, so both list the same models.

Entries are single weight files and diffusers folders (a folder with `model_index.json` or
`config.json`, which is not descended into). The user's folder comes first; the first of two equal
names wins. Hidden entries are skipped; symlink cycles and very deep trees are cut off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
MAX_DEPTH = 6


def is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "config.json").is_file()


def iter_models(settings: Any, kind: str) -> Iterator[tuple[str, Path]]:
    """(name relative to its model folder, path) for every model of `kind`, unsorted, names unique."""
    seen: set[str] = set()
    for root in settings.model_folders(kind):
        if not root.is_dir():
            continue
        visited: set[str] = set()
        stack: list[tuple[Path, int]] = [(root, 0)]
        while stack:
            folder, depth = stack.pop()
            real = os.path.realpath(folder)
            if real in visited or depth > MAX_DEPTH:
                continue
            visited.add(real)
            try:
                children = sorted(folder.iterdir())
            except OSError:
                continue
            for p in children:
                if p.name.startswith("."):
                    continue
                name = p.relative_to(root).as_posix()
                if p.is_dir():
                    if not is_diffusers_folder(p):
                        stack.append((p, depth + 1))
                        continue
                elif p.suffix.lower() not in MODEL_SUFFIXES:
                    continue
                if name not in seen:
                    seen.add(name)
                    yield name, p
