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


_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr, ensure_ascii=False).encode
_FLAT = frozenset({str, int, float, bool, type(None)})


def _canonical(value: Any) -> str:
    return _ENCODE(value)


def _canonical_literals(literals: dict[str, Any]) -> str:
    """A stable text of a node's literal inputs. Flat scalars (nearly every node) take a fast path whose
    `repr` keeps types apart (1, 1.0, True and "1" differ); anything else is canonical JSON."""
    if not literals:
        return "r"
    for v in literals.values():
        if type(v) not in _FLAT:
            return "j" + _ENCODE(literals)
    return "r" + repr(sorted(literals.items()))


def signature(node_type: str, literals: dict[str, Any], upstream: dict[str, str], extra: str = "") -> str:
    """Digest of what determines a node's outputs. `upstream` maps input name -> "sig:output"."""
    parts = [node_type, "\0", _canonical_literals(literals), "\0"]
    for name in sorted(upstream):
        parts += (name, "=", upstream[name], ";")
    if extra:
        parts += ("\0", extra)
    return hashlib.blake2b("".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


_SCALARS = (int, float, bool, type(None), complex)


def estimate_nbytes(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes a cached value holds; tensor *storage* is counted once per storage, whatever the views.

    Iterative, and each container or object is visited once: deep or self-referencing values (a model
    handle pointing back at its owner) neither recurse without bound nor count twice.
    """
    seen = _seen if _seen is not None else set()  # storages counted so far
    visited: set[int] = set()  # containers and objects walked so far
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) in _SCALARS:
            total += 32
            continue
        size_of = getattr(v, "__loom_nbytes__", None)
        if callable(size_of):
            total += int(size_of())
            continue
        storage = getattr(v, "untyped_storage", None)
        if callable(storage):  # torch.Tensor, without importing torch here
            try:
                st = storage()
                key = st.data_ptr()
                if key not in seen:
                    seen.add(key)
                    total += int(st.nbytes())
                continue
            except Exception:
                pass
        nbytes = getattr(v, "nbytes", None)
        if isinstance(nbytes, int):  # numpy
            total += nbytes
            continue
        if isinstance(v, (bytes, bytearray, str)):
            total += len(v) + 49
            continue
        if hasattr(v, "size") and hasattr(v, "mode") and hasattr(v, "getbands"):  # PIL image
            w, h = v.size
            total += w * h * len(v.getbands())
            continue
        if id(v) in visited:
            continue
        if isinstance(v, dict):
            visited.add(id(v))
            total += 64
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            visited.add(id(v))
            total += 56
            stack.extend(v)
        elif hasattr(v, "__dict__") and not isinstance(v, type):
            visited.add(id(v))
            total += 64
            stack.extend(x for x in vars(v).values() if not callable(x))
        else:
            total += 32
    return total


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
