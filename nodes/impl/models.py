"""Model files: listing the model folders, resolving a name to a path, and fingerprints for the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

def list_models(settings: Any, kind: str) -> list[str]:
    """Names (relative paths) of model files and diffusers folders in the `kind` folders."""
    if settings is None:
        return []
    from engine.model_files import iter_models

    return sorted(name for name, _ in iter_models(settings, kind))


def resolve_model(settings: Any, kind: str, name: str) -> Path:
    """The path of a named model; a missing one names the file and lists what the folders hold."""
    from engine.node import NodeError

    from .files import UnsafePath, safe_join

    folders = settings.model_folders(kind)
    for root in folders:
        try:
            p = safe_join(root, name)
        except UnsafePath as exc:
            raise NodeError(str(exc)) from None
        if p.exists():
            return p
    have = list_models(settings, kind)
    where = " or ".join(str(f) for f in folders)
    raise NodeError(f"{kind[:-1] if kind.endswith('s') else kind} {name!r} not found in {where}; "
                    f"available: {have[:30] or 'nothing'}")


def path_fingerprint(p: Path) -> str:
    """size+mtime of a file, or of every file of a folder (a diffusers model), cheap to compute."""
    if p.is_file():
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    parts = []
    for f in sorted(p.rglob("*")):
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def model_fingerprint(kind: str, input_name: str = "name"):
    def fingerprint(inputs: dict, settings: Any) -> str:
        try:
            return path_fingerprint(resolve_model(settings, kind, inputs[input_name]))
        except Exception as exc:
            return f"missing:{exc}"

    return fingerprint
