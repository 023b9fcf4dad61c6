"""Model placement: which device and dtype models run in, and keeping GPU memory within a budget.

fp16 on CUDA (bf16 on request), fp32 on the CPU. Models are loaded on the CPU; `DeviceManager.use()`
moves one to the compute device for the duration of a call and keeps it there while it fits, offloading
the least recently used idle models to the CPU when the budget is exceeded. torch is imported lazily so
the engine stays light for `loom validate`.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_device(choice: str = "auto") -> str:
    if choice == "cpu":
        return "cpu"
    if choice == "cuda":
        if not cuda_available():
            raise RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA device")
        return "cuda"
    return "cuda" if cuda_available() else "cpu"


def resolve_dtype(device: str, choice: str = "auto") -> Any:
    """`auto` is fp16 on a GPU and fp32 on the CPU; an explicit choice is honoured everywhere (bf16 runs well on
    recent CPUs; fp16 on the CPU is slow but works, and shows what a GPU run in fp16 computes)."""
    import torch

    if choice == "auto":
        return torch.float32 if str(device) == "cpu" else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[choice]


_first_slots: "weakref.WeakKeyDictionary[Any, tuple[Any, str] | None]" = weakref.WeakKeyDictionary()


def first_parameter(module: Any) -> Any:
    """`next(module.parameters(), None)` in O(1): the slot (submodule, name) of the first parameter is found once
    per module; reading it again sees a parameter swapped in there (a LoRA patch) or moved (`.to()`)."""
    try:
        slot = _first_slots[module]
    except (KeyError, TypeError):
        slot = None
        for sub in module.modules():
            for name, p in sub._parameters.items():
                if p is not None:
                    slot = (sub, name)
                    break
            if slot is not None:
                break
        try:
            _first_slots[module] = slot
        except TypeError:  # not weak-referenceable: no memo
            pass
    if slot is None:
        return next(module.parameters(), None)
    p = slot[0]._parameters.get(slot[1])
    return p if p is not None else next(module.parameters(), None)


def module_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers()
    )


class DeviceManager:
    """Moves models to the compute device on use; offloads idle ones when over the VRAM budget."""

    def __init__(self, device: str = "cpu", dtype: Any = None, vram_budget_bytes: int | None = None) -> None:
        import torch

        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            # parameters report "cuda:0": compare against the same, or every use() would move the model
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev
        self.dtype = dtype if dtype is not None else resolve_dtype(device)
        self.budget = vram_budget_bytes
        self._resident: OrderedDict[int, Any] = OrderedDict()  # id(module) -> module, LRU order
        self._in_use: dict[int, int] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Any) -> "DeviceManager":
        device = resolve_device(getattr(settings, "device", "auto"))
        return cls(device, resolve_dtype(device, getattr(settings, "dtype", "auto")), getattr(settings, "vram_budget_bytes", None))

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def _budget(self) -> int | None:
        if not self.is_cuda:
            return None
        if self.budget is not None:
            return self.budget
        import torch

        free, total = torch.cuda.mem_get_info(self.device)
        return int(total * 0.85)

    def _offload_for(self, needed: int) -> None:
        budget = self._budget()
        if budget is None:
            return
        resident = sum(module_bytes(m) for m in self._resident.values())
        for key in list(self._resident):
            if resident + needed <= budget:
                break
            if self._in_use.get(key):
                continue
            m = self._resident.pop(key)
            resident -= module_bytes(m)
            m.to("cpu")
        if self.is_cuda:
            import torch

            torch.cuda.empty_cache()

    @contextmanager
    def use(self, module: Any, dtype: Any = None) -> Iterator[Any]:
        """The module on the compute device in the compute dtype, for the `with` block."""
        want = dtype or self.dtype
        key = id(module)
        with self._lock:
            p = first_parameter(module)
            if p is not None and (p.device != self.device or p.dtype != want):
                if self.is_cuda:
                    self._offload_for(module_bytes(module))
                module.to(device=self.device, dtype=want)
            if self.is_cuda:
                self._resident[key] = module
                self._resident.move_to_end(key)
            self._in_use[key] = self._in_use.get(key, 0) + 1
        try:
            yield module
        finally:
            with self._lock:
                self._in_use[key] -= 1
