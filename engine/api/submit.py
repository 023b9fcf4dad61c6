"""From a request's workflow (ours or a ComfyUI prompt) to a validated, queued run.

Shared by `POST /api/v1/runs` and ComfyUI's `POST /prompt`: translate, validate against the live
registry and folders, and refuse with every error at once. Validation happens again when the run
starts (an input file may be gone by then). `SubmitBatcher` then queues the runs of requests that
arrive together with one database write.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..compat.comfy import ComfyTranslationError, is_comfy_prompt, prompt_to_workflow
from ..store import RunRow

if TYPE_CHECKING:
    from ..queue import RunQueue
    from .state import LoomApp


class _RandomIds:
    """Random UUIDs (version 4, as `uuid.uuid4()` makes them) from a pool of OS randomness.

    The same bytes `uuid4()` would read, taken 16 at a time from one `os.urandom` call per 256 ids
    instead of a system call per id (ids are made on the event loop, once per submission).
    """

    POOL = 16 * 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def _bytes(self) -> bytearray:
        with self._lock:
            if self._at >= len(self._pool):
                self._pool, self._at = os.urandom(self.POOL), 0
            b = bytearray(self._pool[self._at:self._at + 16])
            self._at += 16
        b[6] = (b[6] & 0x0F) | 0x40  # version 4
        b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
        return b

    def hex(self) -> str:
        """Like `uuid.uuid4().hex` (the native API's run ids)."""
        return self._bytes().hex()

    def dashed(self) -> str:
        """Like `str(uuid.uuid4())` (ComfyUI's prompt ids)."""
        h = self._bytes().hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


new_ids = _RandomIds()


class Rejected(Exception):
    """An invalid workflow: `errors` in the API's shape `{node_id, input, code, message}`."""

    def __init__(self, message: str, errors: list[dict], type: str = "invalid_workflow") -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.type = type


@dataclass
class Prepared:
    workflow: dict
    prompt: dict | None
    targets: list[str]


def comfy_problems(prompt: dict) -> list[dict]:
    """Entries ComfyUI itself would refuse before translating (not objects, no class_type)."""
    problems = []
    for nid, entry in prompt.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str):
            problems.append({"node_id": str(nid), "input": None, "code": "missing_class_type",
                             "message": f"node {nid} is missing the class_type property"})
        elif "inputs" in entry and not isinstance(entry["inputs"], dict):
            problems.append({"node_id": str(nid), "input": None, "code": "bad_node", "message": f"node {nid}: 'inputs' must be an object"})
    return problems


def looks_comfy(data: dict) -> bool:
    return "format" not in data and bool(data) and all(isinstance(v, dict) for v in data.values()) and (
        is_comfy_prompt(data) or any("class_type" in v for v in data.values()))


def prepare(loom: LoomApp, data: dict, outputs: list[str] | None, force_comfy: bool = False) -> Prepared:
    prompt = None
    workflow: Any = data
    if force_comfy or looks_comfy(data):
        problems = comfy_problems(data)
        if problems:
            raise Rejected(problems[0]["message"], problems, "invalid_prompt")
        try:
            workflow = prompt_to_workflow(data, registry=loom.registry)
        except ComfyTranslationError as exc:
            err = {"node_id": exc.node_id, "input": None, "code": "comfy_translation", "message": str(exc)}
            raise Rejected(str(exc), [err], "invalid_prompt") from None
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            err = {"node_id": None, "input": None, "code": "comfy_translation", "message": f"cannot read the prompt: {exc}"}
            raise Rejected(err["message"], [err], "invalid_prompt") from None
        prompt = data
    graph, errors = loom.executor.validate(workflow, outputs)
    if graph is None:
        dumped = [e.model_dump() for e in errors]
        head = "; ".join(str(e) for e in errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")
        raise Rejected(f"invalid workflow: {head}", dumped)
    return Prepared(workflow=graph.raw if prompt is None else workflow, prompt=prompt, targets=list(graph.targets))


class SubmitBatcher:
    """Group commit across requests: runs submitted while the previous write is committing are queued together.

    Each handler adds its run here and waits. When no write is in flight, the runs gathered in the
    current turn of the event loop (requests that arrived together) are queued at the end of that turn;
    while a write is in flight, new runs wait for it and go together in the next one, as soon as it is
    committed. Either way one `RunQueue.submit_many` queues a whole batch in order with one database job:
    the store's writer thread is woken once, one commit covers the batch, and one call brings the outcome
    back to the loop (instead of a wake-up, a commit and a hop back per run). The writer commits one
    write after the other anyway, so waiting for the previous one delays nothing. Each handler still
    answers only once its own row is committed, and a refused run fails alone.
    Lives on the event loop: call `submit` from there only.
    """

    def __init__(self, queue: "RunQueue") -> None:
        self.queue = queue
        self._waiting: list[tuple[RunRow, bool, bool, asyncio.Future]] = []
        self._scheduled = False
        self._in_flight = False
        self.batches = 0  # how many writes the submissions took (tests and benchmarks read these)
        self.submitted = 0

    def submit(self, row: RunRow, front: bool = False, check_duplicate: bool = True) -> asyncio.Future:
        """A future that completes once the run is queued and committed, or fails as `RunQueue.submit` would."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiting.append((row, front, check_duplicate, fut))
        if not self._scheduled and not self._in_flight:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        return fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        self.batches += 1
        self.submitted += len(batch)
        try:
            done = self.queue.submit_many([(row, front, check) for row, front, check, _ in batch])
        except Exception as exc:  # a bug or a closed store: every waiting request gets the error
            self._settle(batch, exc)
            return
        self._in_flight = True

        def back_to_loop(fut: Future) -> None:  # in the writer thread, after the commit
            try:
                loop.call_soon_threadsafe(self._written, loop, batch, fut)
            except RuntimeError:  # the loop closed (shutdown): nobody is waiting any more
                pass

        done.add_done_callback(back_to_loop)

    def _written(self, loop: asyncio.AbstractEventLoop, batch: list, fut: Future) -> None:
        self._in_flight = False
        try:
            outcome: Any = fut.result()
        except Exception as exc:
            outcome = exc
        self._flush(loop)  # the runs that came meanwhile: to the writer first, then answer these
        self._settle(batch, outcome)

    @staticmethod
    def _settle(batch: list, outcome: "list[BaseException | None] | BaseException") -> None:
        for i, (_, _, _, fut) in enumerate(batch):
            if fut.done():  # the handler was cancelled (its run stays queued, as with one write per run)
                continue
            exc = outcome if isinstance(outcome, BaseException) else outcome[i]
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
