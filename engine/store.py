"""SQLite persistence of the run queue and history, so a killed server loses nothing.

One table, one row per run. One writer thread owns the writing connection and commits whatever writes
have queued up in one transaction (group commit), so many concurrent submissions cost one commit. WAL
journal with `synchronous=NORMAL`: a commit is a write into the WAL file without fsync, so it survives
the process being killed (only an OS crash could lose the last commits).
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

SCHEMA_VERSION = 1

TERMINAL = ("success", "error", "interrupted", "cancelled")
SERVER_STOPPED = "server stopped during the run"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    number     INTEGER NOT NULL,
    status     TEXT NOT NULL,
    position   REAL NOT NULL DEFAULT 0,
    client_id  TEXT,
    created    REAL NOT NULL,
    started    REAL,
    finished   REAL,
    workflow   TEXT NOT NULL,
    prompt     TEXT,
    targets    TEXT NOT NULL DEFAULT '[]',
    extra      TEXT NOT NULL DEFAULT '{}',
    nodes      TEXT NOT NULL DEFAULT '{}',
    outputs    TEXT NOT NULL DEFAULT '{}',
    error      TEXT,
    signatures TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, number);
"""

_JSON_COLUMNS = ("workflow", "prompt", "targets", "extra", "nodes", "outputs", "error", "signatures")
_COLUMNS = ("run_id", "number", "status", "position", "client_id", "created", "started", "finished") + _JSON_COLUMNS
_INSERT = f"INSERT INTO runs ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})"


class DuplicateRun(ValueError):
    """A client chose a run id that already exists."""


@dataclass
class RunRow:
    """One run as stored: the workflow to run, where it stands, and what it produced."""

    run_id: str
    number: int
    workflow: dict
    status: str = "queued"
    position: float = 0.0
    client_id: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    prompt: dict | None = None  # the ComfyUI API prompt, when the run came from one
    targets: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # ComfyUI's extra_data
    nodes: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    error: dict | None = None
    signatures: dict = field(default_factory=dict)


_encode = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps(..., separators=) builds one per call


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    if not value and type(value) in (dict, list):  # the empty columns of a fresh row
        return "{}" if type(value) is dict else "[]"
    return _encode(value)


def _insert_values(row: RunRow) -> tuple:
    return (row.run_id, row.number, row.status, row.position, row.client_id, row.created, row.started, row.finished,
            _dumps(row.workflow), _dumps(row.prompt), _dumps(row.targets), _dumps(row.extra), _dumps(row.nodes),
            _dumps(row.outputs), _dumps(row.error), _dumps(row.signatures))


class Store:
    """Runs in SQLite: one writer thread commits every write in batches; reads use their own connection.

    Writers never wait on each other: `write(fn)` queues a job, the writer thread runs whatever has
    queued up in one transaction (each job in its own savepoint, so one failing job fails alone; a job
    alone in its transaction needs none) and completes the jobs' futures after the commit. The server
    queues the runs submitted together as one `insert_many` job, so a burst costs few commits. `barrier()` is a future that completes once every
    earlier write is committed: the API answers a submission only after that. WAL checkpoints (the only
    fsyncs) run in a background thread, never inside a request.
    """

    def __init__(self, path: Path, checkpoint_every: float = 2.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints happen in _checkpoints()
        row = self._db.execute("SELECT COALESCE(MAX(number), 0) FROM runs").fetchone()
        self._number = int(row[0])
        self._number_lock = threading.Lock()
        self._read = self._connect()
        self._read_lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="loom-store-writer", daemon=True)
        self._writer.start()
        self._checkpointer = threading.Thread(target=self._checkpoints, args=(checkpoint_every,),
                                              name="loom-store-checkpoint", daemon=True)
        self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._jobs.put(None)
        self._writer.join(30)
        self._closed.set()
        self._checkpointer.join(30)
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._db.close()
        with self._read_lock:
            self._read.close()

    # -- the writer ----------------------------------------------------------------------------------
    def write(self, job: Callable[[sqlite3.Connection], Any]) -> Future:
        fut: Future = Future()
        if self._closed.is_set():
            fut.set_exception(RuntimeError("the store is closed"))
        else:
            self._jobs.put((job, fut))
        return fut

    def barrier(self) -> Future:
        """Completes when every write queued before it is committed."""
        return self.write(_nothing)

    def _write_loop(self) -> None:
        db = self._db
        while True:
            first = self._jobs.get()
            batch = [first]
            while len(batch) < 512:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in batch)
            jobs = [item for item in batch if item is not None]
            results: list[tuple[Future, Any, BaseException | None]] = []
            try:
                db.execute("BEGIN IMMEDIATE")
                if len(jobs) == 1:  # alone in its transaction: rolling that back is rolling back the job
                    job, fut = jobs[0]
                    try:
                        results.append((fut, job(db), None))
                    except Exception as exc:
                        db.execute("ROLLBACK")
                        results.append((fut, None, exc))
                    else:
                        db.execute("COMMIT")
                else:
                    for job, fut in jobs:
                        db.execute("SAVEPOINT job")
                        try:
                            results.append((fut, job(db), None))
                            db.execute("RELEASE job")
                        except Exception as exc:
                            db.execute("ROLLBACK TO job")
                            db.execute("RELEASE job")
                            results.append((fut, None, exc))
                    db.execute("COMMIT")
            except sqlite3.Error as exc:  # the disk is full or gone: every job of the batch fails
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                results = [(fut, None, exc) for _, fut in jobs]
            for fut, value, exc in results:
                if not fut.set_running_or_notify_cancel():  # cancelled by its caller: nobody waits for it
                    continue
                if exc is None:
                    fut.set_result(value)
                else:
                    fut.set_exception(exc)
            if stop:
                return

    def _checkpoints(self, every: float) -> None:
        db = self._connect()
        try:
            while not self._closed.wait(every):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass
        finally:
            db.close()

    # -- writing -------------------------------------------------------------------------------------
    def next_number(self) -> int:
        with self._number_lock:
            self._number += 1
            return self._number

    def insert(self, row: RunRow) -> Future:
        def job(db: sqlite3.Connection) -> None:
            try:
                db.execute(_INSERT, _insert_values(row))
            except sqlite3.IntegrityError:
                raise DuplicateRun(f"run id {row.run_id!r} already exists") from None

        return self.write(job)

    def insert_many(self, rows: list[RunRow]) -> Future:
        """Insert several rows as one write; the future's result lists, per row, None or its DuplicateRun.

        One statement for the lot; should one row's id already exist, the rows are inserted one by one
        instead, so that row fails alone (as if each had been inserted by `insert`).
        """
        def job(db: sqlite3.Connection) -> list[BaseException | None]:
            values = [_insert_values(r) for r in rows]
            if len(values) == 1:
                try:
                    db.execute(_INSERT, values[0])
                    return [None]
                except sqlite3.IntegrityError:
                    return [DuplicateRun(f"run id {rows[0].run_id!r} already exists")]
            db.execute("SAVEPOINT rows")
            try:
                db.executemany(_INSERT, values)
                db.execute("RELEASE rows")
                return [None] * len(rows)
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK TO rows")
                db.execute("RELEASE rows")
            out: list[BaseException | None] = []
            for r, v in zip(rows, values):
                try:
                    db.execute(_INSERT, v)  # a failed INSERT of one row changes nothing: no savepoint needed
                    out.append(None)
                except sqlite3.IntegrityError:
                    out.append(DuplicateRun(f"run id {r.run_id!r} already exists"))
            return out

        return self.write(job)

    def mark_running(self, run_id: str, started: float) -> Future:
        return self.write(lambda db: db.execute("UPDATE runs SET status='running', started=? WHERE run_id=?", (started, run_id)))

    def finish(self, row: RunRow) -> Future:
        values = (row.status, row.started, row.finished, _dumps(row.nodes), _dumps(row.outputs), _dumps(row.error),
                  _dumps(row.signatures), row.run_id)
        return self.write(lambda db: db.execute(
            "UPDATE runs SET status=?, started=?, finished=?, nodes=?, outputs=?, error=?, signatures=? WHERE run_id=?", values))

    def cancel(self, run_ids: Iterable[str], when: float) -> Future:
        pairs = [(when, r) for r in run_ids]
        return self.write(lambda db: db.executemany(
            "UPDATE runs SET status='cancelled', finished=? WHERE run_id=? AND status='queued'", pairs))

    def set_positions(self, order: Iterable[tuple[float, str]]) -> Future:
        pairs = list(order)
        return self.write(lambda db: db.executemany("UPDATE runs SET position=? WHERE run_id=?", pairs))

    def delete(self, run_id: str) -> bool:
        return bool(self.write(lambda db: db.execute(
            f"DELETE FROM runs WHERE run_id=? AND status IN {TERMINAL}", (run_id,)).rowcount).result())

    def clear_history(self) -> int:
        return int(self.write(lambda db: db.execute(f"DELETE FROM runs WHERE status IN {TERMINAL}").rowcount).result())

    # -- reading (committed data only) ---------------------------------------------------------------
    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read_lock:
            return self._read.execute(sql, args).fetchall()

    def get(self, run_id: str) -> RunRow | None:
        rows = self._query(f"SELECT {','.join(_COLUMNS)} FROM runs WHERE run_id=?", (run_id,))
        return _row(rows[0]) if rows else None

    def exists(self, run_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM runs WHERE run_id=?", (run_id,)))

    def status_of(self, run_id: str) -> str | None:
        rows = self._query("SELECT status FROM runs WHERE run_id=?", (run_id,))
        return rows[0][0] if rows else None

    def history(self, offset: int = 0, limit: int = 50, statuses: tuple[str, ...] = TERMINAL,
                oldest_first: bool = False) -> tuple[list[RunRow], int]:
        """Finished runs, newest first (by number), with the total for paging."""
        marks = ",".join("?" * len(statuses))
        order = "ASC" if oldest_first else "DESC"
        with self._read_lock:
            self._read.execute("BEGIN")  # one snapshot for the count and the page
            try:
                total = self._read.execute(f"SELECT COUNT(*) FROM runs WHERE status IN ({marks})", statuses).fetchone()[0]
                rows = self._read.execute(
                    f"SELECT {','.join(_COLUMNS)} FROM runs WHERE status IN ({marks}) ORDER BY number {order} LIMIT ? OFFSET ?",
                    (*statuses, limit, offset)).fetchall()
            finally:
                self._read.execute("COMMIT")
        return [_row(r) for r in rows], int(total)

    def recover(self, now: float | None = None) -> tuple[list[RunRow], list[str]]:
        """At start: runs left 'running' by a dead server become errors; queued runs come back in order."""
        now = time.time() if now is None else now
        error = _dumps({"node_id": None, "node_type": None, "error_type": "ServerStopped", "message": SERVER_STOPPED})

        def job(db: sqlite3.Connection) -> list[str]:
            stale = [r[0] for r in db.execute("SELECT run_id FROM runs WHERE status='running'")]
            db.executemany("UPDATE runs SET status='error', finished=?, error=? WHERE run_id=?", [(now, error, r) for r in stale])
            return stale

        stale = self.write(job).result()
        rows = self._query(f"SELECT {','.join(_COLUMNS)} FROM runs WHERE status='queued' ORDER BY position, number")
        return [_row(r) for r in rows], stale


def _nothing(db: sqlite3.Connection) -> None:
    return None


def _row(r: tuple) -> RunRow:
    d = dict(zip(_COLUMNS, r))
    for c in _JSON_COLUMNS:
        if d[c] is not None:
            d[c] = json.loads(d[c])
    for c, empty in (("targets", []), ("extra", {}), ("nodes", {}), ("outputs", {}), ("signatures", {})):
        if d[c] is None:
            d[c] = empty
    return RunRow(**d)
