"""Output cache: signatures that identify a node's result by what went into it, and a byte-bounded LRU.

A signature is a digest of (node type, literal inputs, outside-state fingerprint, and the signatures of
the upstream outputs it reads). Node ids never enter it, so identical sub-graphs in different workflows
share results, and the key has a fixed size however deep the graph (ComfyUI's keys grow with depth).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr, ensure_ascii=False)


def signature(node_type: str, literals: dict[str, Any], upstream: dict[str, str], extra: str = "") -> str:
    """Digest of what determines a node's outputs. `upstream` maps input name -> "sig:output"."""
    h = hashlib.blake2b(digest_size=16)
    h.update(node_type.encode())
    h.update(b"\0")
    h.update(_canonical(literals).encode())
    h.update(b"\0")
    for name in sorted(upstream):
        h.update(name.encode())
        h.update(b"=")
        h.update(upstream[name].encode())
        h.update(b";")
    if extra:
        h.update(b"\0")
        h.update(extra.encode())
    return h.hexdigest()


def estimate_nbytes(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes a cached value holds; tensor *storage* is counted once per storage, whatever the views."""
    seen = _seen if _seen is not None else set()
    size_of = getattr(value, "__loom_nbytes__", None)
    if callable(size_of):
        return int(size_of())
    storage = getattr(value, "untyped_storage", None)
    if callable(storage):  # torch.Tensor, without importing torch here
        try:
            st = storage()
            key = st.data_ptr()
            if key in seen:
                return 0
            seen.add(key)
            return int(st.nbytes())
        except Exception:
            pass
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):  # numpy
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return len(value) + 49
    if isinstance(value, dict):
        return 64 + sum(estimate_nbytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 56 + sum(estimate_nbytes(v, seen) for v in value)
    if hasattr(value, "size") and hasattr(value, "mode") and hasattr(value, "getbands"):  # PIL image
        w, h = value.size
        return w * h * len(value.getbands())
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return 64 + sum(estimate_nbytes(v, seen) for v in vars(value).values() if not callable(v))
    return 32


class OutputCache:
    """Signature -> {output name: value}, least recently used first out, bounded by estimated bytes."""

    def __init__(self, max_bytes: int = 4 * 1024**3) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, sig: str) -> dict[str, Any] | None:
        with self._lock:
            hit = self._entries.get(sig)
            if hit is None:
                self.misses += 1
                return None
            self._entries.move_to_end(sig)
            self.hits += 1
            return hit[0]

    def peek(self, sig: str) -> dict[str, Any] | None:
        """Look without touching recency or counters (used to serve previews to the editor)."""
        hit = self._entries.get(sig)
        return None if hit is None else hit[0]

    def put(self, sig: str, outputs: dict[str, Any]) -> bool:
        size = estimate_nbytes(outputs)
        with self._lock:
            if sig in self._entries:
                self._bytes -= self._entries.pop(sig)[1]
            if size > self.max_bytes:
                return False
            self._entries[sig] = (outputs, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, (_, s) = self._entries.popitem(last=False)
                self._bytes -= s
            return True

    def __contains__(self, sig: str) -> bool:
        return sig in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
