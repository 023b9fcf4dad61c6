"""The run queue: ordered pending runs, one worker thread, one executor whose cache outlives runs.

Every change is written to the `Store` before it is acknowledged, so a killed server comes back with its
queue. The worker thread runs one run at a time and reports through a `QueueListener` (the server
marshals those calls onto its event loop). Progress events are throttled per node and live previews are
shrunk to small JPEGs here, in the worker thread, so the event loop never does image work.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import events as ev
from .executor import Executor, RunResult
from .store import SERVER_STOPPED, DuplicateRun, RunRow, Store

log = logging.getLogger(__name__)

TERMINAL_EVENTS = ("run_finished", "run_failed", "run_interrupted")


class QueueListener(Protocol):
    """What the queue tells the outside world. Called from the worker thread (or the submitting thread)."""

    def queue_changed(self) -> None: ...

    def run_event(self, row: RunRow, event: dict) -> None: ...

    def run_preview(self, row: RunRow, node_id: str, jpeg: bytes) -> None: ...

    def run_done(self, row: RunRow, final_events: list[dict]) -> None: ...


class NullListener:
    def queue_changed(self) -> None:
        pass

    def run_event(self, row: RunRow, event: dict) -> None:
        pass

    def run_preview(self, row: RunRow, node_id: str, jpeg: bytes) -> None:
        pass

    def run_done(self, row: RunRow, final_events: list[dict]) -> None:
        pass


@dataclass
class _Active:
    row: RunRow
    interrupt: threading.Event = field(default_factory=threading.Event)


class RunQueue:
    def __init__(self, executor: Executor, store: Store, listener: QueueListener | None = None, *,
                 progress_interval: float = 0.1, preview_interval: float = 0.25, preview_size: int = 256,
                 submit_grace: float = 0.005, max_defer: float = 0.25) -> None:
        self.executor = executor
        self.store = store
        self.listener: QueueListener = listener or NullListener()
        self.progress_interval = progress_interval
        self.preview_interval = preview_interval
        self.preview_size = preview_size
        self._cond = threading.Condition()
        self._pending: list[RunRow] = []
        self._by_id: dict[str, RunRow] = {}
        self._running: _Active | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_pos = 0.0
        self._last_submit = 0.0
        self.submit_grace = submit_grace
        self.max_defer = max_defer
        self.completed = 0

    # -- life cycle ----------------------------------------------------------------------------------
    def restore(self) -> list[str]:
        """Load the queue a previous server left; returns the runs it had to mark as failed."""
        pending, stale = self.store.recover()
        with self._cond:
            self._pending = pending
            self._by_id = {r.run_id: r for r in pending}
            self._last_pos = max((r.position for r in pending), default=0.0)
        return stale

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="loom-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after interrupting the running run (recorded as stopped); pending runs stay queued."""
        with self._cond:
            self._stopping = True
            if self._running is not None:
                self._running.interrupt.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- what the API calls --------------------------------------------------------------------------
    def submit(self, row: RunRow, front: bool = False, check_duplicate: bool = True) -> Future:
        """Enqueue and persist; the future completes once the row is committed (answer the client then).

        Raises store.DuplicateRun for a run id already in use (`check_duplicate=False` skips the
        database look-up, for ids the server generated itself).
        """
        with self._cond:
            self._check_new(row, check_duplicate)
            self._number_and_place(row, front)
            committed = self.store.insert(row)
            self._add(row, front)
            self._cond.notify()
        self.listener.queue_changed()
        return committed

    def submit_many(self, items: list[tuple[RunRow, bool, bool]]) -> Future:
        """`submit` for several runs `(row, front, check_duplicate)` at once, written in one database job.

        The rules and the resulting order are those of calling `submit` for each item in turn, but the
        writer thread is woken once and commits them together (group commit). The future completes once
        the rows are committed, with a list holding, for each item, None (queued and committed) or the
        exception that refused it alone (DuplicateRun). Should the write fail as a whole, the future
        raises and none of the runs stays queued. Refused rows are taken out of the queue before the
        future completes, so no run stays queued without its row.
        """
        refused: list[BaseException | None] = [None] * len(items)
        accepted: list[RunRow] = []
        with self._cond:
            for i, (row, front, check_duplicate) in enumerate(items):
                try:
                    self._check_new(row, check_duplicate)
                except DuplicateRun as exc:
                    refused[i] = exc
                    continue
                self._number_and_place(row, front)
                self._add(row, front)
                accepted.append(row)
            if accepted:
                # queued for the writer before the worker can see the rows, so their insert always comes
                # before the run's own updates (mark_running, finish)
                written = self.store.insert_many(accepted)
                self._cond.notify()
        out: Future = Future()
        if not accepted:
            out.set_result(refused)
            return out
        self.listener.queue_changed()

        def settle(fut: Future) -> None:  # in the writer thread, once the rows are committed (or not)
            try:
                results = fut.result()
            except BaseException as exc:
                for row in accepted:
                    self._discard_row(row)
                out.set_exception(exc)
                self.listener.queue_changed()
                return
            outcome = iter(results)
            failed = False
            for i in range(len(items)):
                if refused[i] is None:
                    refused[i] = next(outcome)
                    if refused[i] is not None:
                        self._discard_row(items[i][0])
                        failed = True
            out.set_result(refused)
            if failed:
                self.listener.queue_changed()

        written.add_done_callback(settle)
        return out

    def _check_new(self, row: RunRow, check_duplicate: bool) -> None:
        if row.run_id in self._by_id or (check_duplicate and self.store.exists(row.run_id)):
            raise DuplicateRun(f"run id {row.run_id!r} already exists")

    def _number_and_place(self, row: RunRow, front: bool) -> None:
        row.number = self.store.next_number()
        if front and self._pending:
            row.position = self._pending[0].position - 1.0
        else:
            self._last_pos += 1.0
            row.position = self._last_pos

    def _add(self, row: RunRow, front: bool) -> None:
        if front:
            self._pending.insert(0, row)
        else:
            self._pending.append(row)
        self._by_id[row.run_id] = row
        self._last_submit = time.monotonic()

    def _discard_row(self, row: RunRow) -> None:
        """Take this very row out (by identity: another run may hold its id)."""
        with self._cond:
            if self._by_id.get(row.run_id) is row:
                del self._by_id[row.run_id]
            for i, r in enumerate(self._pending):
                if r is row:
                    del self._pending[i]
                    break

    def discard(self, run_id: str) -> None:
        """Forget a pending run whose row could not be written (the client was told it failed)."""
        with self._cond:
            row = self._by_id.pop(run_id, None)
            if row is not None and row in self._pending:
                self._pending.remove(row)

    def snapshot(self) -> tuple[RunRow | None, list[RunRow]]:
        """The running run and the pending ones, copied so readers never see a half-updated dict."""
        with self._cond:
            running = self._copy(self._running.row) if self._running else None
            return running, list(self._pending)

    def live(self, run_id: str) -> RunRow | None:
        """A queued or running run (from memory), or None when it is finished or unknown."""
        with self._cond:
            row = self._by_id.get(run_id)
            return None if row is None else self._copy(row)

    def _copy(self, row: RunRow) -> RunRow:
        out = copy.copy(row)
        out.nodes = dict(row.nodes)
        if self._running is not None and self._running.row is row:
            # its end is being recorded: it stays "running" until the store has the final state
            out.status, out.finished = "running", None
        return out

    def remaining(self) -> int:
        with self._cond:
            return len(self._pending) + (1 if self._running else 0)

    def running_id(self) -> str | None:
        with self._cond:
            return self._running.row.run_id if self._running else None

    def cancel(self, run_id: str) -> str:
        """-> "ok" (it was pending) | "running" | "unknown" | the status of a finished run."""
        with self._cond:
            if self._running is not None and self._running.row.run_id == run_id:
                return "running"
            row = self._by_id.get(run_id)
            if row is not None:
                self._pending.remove(row)
                del self._by_id[run_id]
                now = time.time()
                self.store.cancel([run_id], now)
                row.status, row.finished = "cancelled", now
                result = "ok"
            else:
                result = self.store.status_of(run_id) or "unknown"
        if result == "ok":
            self.listener.queue_changed()
        return result

    def clear(self) -> int:
        with self._cond:
            ids = [r.run_id for r in self._pending]
            self.store.cancel(ids, time.time())
            self._pending.clear()
            for i in ids:
                self._by_id.pop(i, None)
        if ids:
            self.listener.queue_changed()
        return len(ids)

    def move(self, run_id: str, position: int) -> bool:
        """Put a pending run at `position` (0 = next, clamped to the queue). False if it is not pending."""
        with self._cond:
            row = self._by_id.get(run_id)
            if row is None or row not in self._pending:
                return False
            self._pending.remove(row)
            position = max(0, min(position, len(self._pending)))
            self._pending.insert(position, row)
            for i, r in enumerate(self._pending):
                r.position = float(i)
            self._last_pos = float(len(self._pending))
            self.store.set_positions([(r.position, r.run_id) for r in self._pending])
        self.listener.queue_changed()
        return True

    def interrupt(self, run_id: str | None = None) -> str | None:
        """Interrupt the running run (only if it is `run_id` when given); returns the id interrupted."""
        with self._cond:
            active = self._running
            if active is None or (run_id is not None and active.row.run_id != run_id):
                return None
            active.interrupt.set()
            return active.row.run_id

    # -- the worker ----------------------------------------------------------------------------------
    def _yield_to_submissions(self) -> None:
        """Let a burst of submissions pass before starting the next run (at most `max_defer` seconds).

        Node code holds the GIL much of the time; while clients are submitting, running it would make
        every submission wait for the GIL. The total work is the same either way: the queue is accepted
        first and executed right after, so submission latency stays low and nothing runs later overall.
        """
        deadline = time.monotonic() + self.max_defer
        while not self._stopping:
            now = time.monotonic()
            if now >= self._last_submit + self.submit_grace or now >= deadline:
                return
            time.sleep(min(self.submit_grace, deadline - now))

    def _next(self) -> _Active | None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
            self._yield_to_submissions()
            with self._cond:
                if self._stopping:
                    return None
                if not self._pending:  # cancelled meanwhile
                    continue
                row = self._pending.pop(0)
                row.status, row.started = "running", time.time()
                self._running = _Active(row)
                self.store.mark_running(row.run_id, row.started)
                return self._running

    def _work(self) -> None:
        while True:
            active = self._next()
            if active is None:
                return
            self.listener.queue_changed()
            final: list[dict] = []
            try:
                final = self._execute(active)
            except BaseException as exc:  # a bug (even a node calling sys.exit) must never stop the queue
                log.exception("run %s crashed", active.row.run_id)
                row = active.row
                row.status = "error"
                row.error = {"node_id": None, "node_type": None, "error_type": type(exc).__name__,
                             "message": f"internal error: {exc}"}
                final = [{"type": "run_failed", "run_id": row.run_id, **row.error, "errors": []}]
            row = active.row
            row.finished = time.time()
            try:
                self.store.finish(row).result()  # readers must find the result before anyone is told
            except Exception:
                log.exception("could not record the end of run %s", row.run_id)
            with self._cond:
                self._running = None
                self._by_id.pop(row.run_id, None)
                self.completed += 1
            self.listener.run_done(row, final)
            self.listener.queue_changed()

    _default_fast: bool | None = None

    def _execute(self, active: _Active) -> list[dict]:
        """Validate (files may have changed since submission), run, and fill the row with the result."""
        row = active.row
        executor = self.executor
        # fast mode: the server's --fast, or the workflow's own `settings: {"fast": true}` for this run
        if self._default_fast is None:
            self._default_fast = bool(getattr(executor.settings, "fast", False))
        wf_settings = row.workflow.get("settings") if isinstance(row.workflow, dict) else None
        executor.settings.fast = self._default_fast or bool(isinstance(wf_settings, dict) and wf_settings.get("fast") is True)
        graph, errors = executor.validate(row.workflow, row.targets or None)
        if graph is None:
            first = errors[0]
            row.status = "error"
            row.error = {"node_id": first.node_id, "node_type": None, "error_type": "InvalidWorkflow",
                         "message": "; ".join(str(e) for e in errors[:5]), "errors": [e.model_dump() for e in errors]}
            return [{"type": "run_failed", "run_id": row.run_id, **row.error}]
        row.signatures = executor.signatures(graph)  # exact for deterministic nodes; replaced at the end
        with self._cond:
            row.nodes = {nid: {"status": "pending", "cached": False, "seconds": 0.0} for nid in graph.order}
        final: list[dict] = []
        sink = _EventSink(self, row, final)
        result = executor.run(graph, run_id=row.run_id, on_event=sink, interrupt=active.interrupt, prompt=row.prompt)
        self._record(row, result)
        if self._stopping and result.status == "interrupted":
            row.status = "error"
            row.error = {**(row.error or {}), "error_type": "ServerStopped", "message": SERVER_STOPPED}
            final[:] = [{"type": "run_failed", "run_id": row.run_id, "node_id": row.error.get("node_id"),
                         "node_type": row.error.get("node_type"), "error_type": "ServerStopped",
                         "message": SERVER_STOPPED, "errors": []}]
        return final

    def _record(self, row: RunRow, result: RunResult) -> None:
        with self._cond:
            nodes = dict(row.nodes)
            for nid, rep in result.nodes.items():
                nodes[nid] = {"status": rep.status, "cached": rep.cached, "seconds": round(rep.seconds, 6)}
            row.nodes = nodes
        row.outputs = {nid: ui.model_dump(mode="json") for nid, ui in result.ui.items()}
        row.signatures = dict(result.signatures)
        row.error = result.error
        row.status = {"invalid": "error"}.get(result.status, result.status)

    def _set_node(self, row: RunRow, node_id: str, status: dict) -> None:
        with self._cond:
            nodes = dict(row.nodes)
            nodes[node_id] = status
            row.nodes = nodes


class _EventSink:
    """Receives executor events in the worker thread: throttles, tracks node states, forwards."""

    def __init__(self, queue: RunQueue, row: RunRow, final: list[dict]) -> None:
        self.queue = queue
        self.row = row
        self.final = final
        self.last_progress: dict[str, float] = {}
        self.last_preview: dict[str, float] = {}

    def __call__(self, event: ev.Event) -> None:
        q, row = self.queue, self.row
        kind = event.type  # type: ignore[attr-defined]
        if kind == "node_progress":
            assert isinstance(event, ev.NodeProgress)
            if event.preview is not None:
                self._preview(event)
            now = time.monotonic()
            done = event.max is not None and event.value >= event.max
            said = event.text is not None  # a status line ("compiling ...") is news: never dropped
            if not done and not said and now - self.last_progress.get(event.node_id, 0.0) < q.progress_interval:
                return
            self.last_progress[event.node_id] = now
        elif kind == "node_started":
            q._set_node(row, event.node_id, {"status": "running", "cached": False, "seconds": 0.0})  # type: ignore[attr-defined]
        elif kind == "node_finished":
            assert isinstance(event, ev.NodeFinished)
            q._set_node(row, event.node_id, {"status": "cached" if event.cached else "success",
                                             "cached": event.cached, "seconds": round(event.seconds, 6)})
        elif kind == "nodes_cached":
            with q._cond:
                nodes = dict(row.nodes)
                for nid in event.nodes:  # type: ignore[attr-defined]
                    nodes[nid] = {"status": "cached", "cached": True, "seconds": 0.0}
                row.nodes = nodes
        data = event.model_dump(mode="json")
        if kind in TERMINAL_EVENTS:
            self.final.append(data)  # sent once the store holds the result, so readers find it
            return
        q.listener.run_event(row, data)

    def _preview(self, event: ev.NodeProgress) -> None:
        now = time.monotonic()
        if now - self.last_preview.get(event.node_id, 0.0) < self.queue.preview_interval:
            return
        self.last_preview[event.node_id] = now
        try:
            from .preview import jpeg_bytes

            data = jpeg_bytes(event.preview, self.queue.preview_size)
        except Exception:
            log.exception("could not encode a live preview")
            return
        self.queue.listener.run_preview(self.row, event.node_id, data)


def run_row(run_id: str, workflow: dict, *, client_id: str | None = None, prompt: dict | None = None,
            targets: list[str] | None = None, extra: dict[str, Any] | None = None) -> RunRow:
    """A fresh queued row (number and position are assigned by `RunQueue.submit`)."""
    return RunRow(run_id=run_id, number=0, workflow=workflow, client_id=client_id, prompt=prompt,
                  targets=list(targets or []), extra=dict(extra or {}))
