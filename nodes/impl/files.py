"""File helpers that need no torch: safe paths inside a folder, and listing images (for choices).

Validation lists the input folder for LoadImage's choices on every submission, so the listing is cached
by the folders' modification times and this module stays light (no torch, numpy or PIL).
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class UnsafePath(ValueError):
    pass


def safe_join(root: Path, relative: str) -> Path:
    """`root/relative`, refusing absolute paths, `..` and symlinks that lead out of `root`."""
    if not relative or "\x00" in relative:
        raise UnsafePath(f"empty or invalid file name {relative!r}")
    rel = Path(relative)
    if rel.is_absolute() or any(part == ".." for part in rel.parts) or relative.startswith(("/", "\\")):
        raise UnsafePath(f"file name {relative!r} must stay inside {root}")
    root_resolved = root.resolve()
    target = (root / rel).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePath(f"file name {relative!r} leads outside {root}")
    return target


_LISTINGS: dict[str, tuple[tuple, list[str]]] = {}


def _dir_stamps(folder: str) -> tuple:
    """Modification times of the folder and its sub-folders: any added, removed or renamed file changes one."""
    stamps = []
    for dirpath, dirnames, _ in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        stamps.append((dirpath, os.stat(dirpath).st_mtime_ns))
    return tuple(stamps)


def list_images(folder: Path) -> list[str]:
    """Image files below `folder` (relative POSIX paths, sorted), hidden files and folders left out."""
    return list_files(folder, IMAGE_SUFFIXES)


def list_files(folder: Path, suffixes: set[str] | frozenset[str]) -> list[str]:
    """Files with one of `suffixes` below `folder` (relative POSIX paths, sorted), hidden ones left out; cached
    until a folder's modification time changes."""
    root = os.fspath(folder)
    if not os.path.isdir(root):
        return []
    stamps = _dir_stamps(root)
    key = root + "\x00" + ",".join(sorted(suffixes))
    hit = _LISTINGS.get(key)
    if hit is not None and hit[0] == stamps:
        return list(hit[1])
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in suffixes:
                continue
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            out.append(Path(rel).as_posix())
    out.sort()
    _LISTINGS[key] = (stamps, out)
    return list(out)
