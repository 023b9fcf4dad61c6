"""Group commit of submissions and coalesced queue status: fewer writes and messages, same guarantees.

Runs submitted in one turn of the event loop are queued with one database write, yet each request is
answered only once its own row is committed, a refused run fails alone (and never takes another run out
of the queue), and a failed write leaves nothing queued. Queue status messages are coalesced during a
burst but the last one always tells the final queue size.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from concurrent.futures import Future

import pytest

from engine.api.hub import Hub
from engine.api.submit import SubmitBatcher, new_ids
from engine.queue import RunQueue, run_row
from engine.store import DuplicateRun, Store

from .conftest import read_until
from .flows import comfy_count, count_flow

class _NoExecutor:
    settings = None


def _queue(tmp_path) -> RunQueue:
    """A queue whose worker never starts: submitted runs stay pending."""
    return RunQueue(_NoExecutor(), Store(tmp_path / "db.sqlite3"))  # type: ignore[arg-type]


# -- the store and the queue -------------------------------------------------------------------------------
def test_insert_many_fails_only_the_duplicate_row(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    try:
        store.insert(run_row("taken", {"nodes": {}})).result()
        rows = [run_row(i, {"nodes": {"n": {}}}) for i in ("a", "taken", "b")]
        for n, r in enumerate(rows, start=10):
            r.number = n
        out = store.insert_many(rows).result()
        assert out[0] is None and isinstance(out[1], DuplicateRun) and out[2] is None
        assert store.get("a").workflow == {"nodes": {"n": {}}} and store.get("b").number == 12
        assert store.get("taken").workflow == {"nodes": {}}, "the existing row is untouched"
        assert isinstance(store.insert_many([run_row("a", {})]).result()[0], DuplicateRun)
        assert store.insert_many([run_row("c", {}), run_row("d", {})]).result() == [None, None]
        assert store.get("c").targets == [] and store.get("d").extra == {}
    finally:
        store.close()


def test_a_failing_write_job_fails_alone_in_a_batch_or_by_itself(tmp_path):
    store = Store(tmp_path / "db.sqlite3")

    def half_done(run_id: str):
        def job(db):
            db.execute("INSERT INTO runs (run_id, number, status, created, workflow) VALUES (?, 1, 'queued', 0, '{}')", (run_id,))
            raise ZeroDivisionError("the job broke after writing")
        return job

    try:
        with pytest.raises(ZeroDivisionError):  # alone in its transaction: rolled back without a savepoint
            store.write(half_done("lone")).result()
        assert store.get("lone") is None
        gate = threading.Event()
        first = store.write(lambda db: gate.wait(5))  # holds the writer: the next jobs queue up as one batch
        time.sleep(0.05)
        ok = store.insert(run_row("a", {}))
        bad = store.write(half_done("b"))
        ok2 = store.insert_many([run_row("c", {}), run_row("d", {})])
        gate.set()
        first.result()
        assert ok.result() is None and ok2.result() == [None, None]
        with pytest.raises(ZeroDivisionError):
            bad.result()
        assert store.get("b") is None and all(store.get(r) is not None for r in "acd")
    finally:
        store.close()


def test_submit_many_keeps_the_order_and_rules_of_submit(tmp_path):
    q = _queue(tmp_path)
    try:
        q.submit(run_row("p", {})).result()
        items = [(run_row("a", {}), False, True), (run_row("b", {}), True, True), (run_row("p", {}), False, True),
                 (run_row("c", {}), False, False)]
        out = q.submit_many(items).result()
        assert out[0] is None and out[1] is None and isinstance(out[2], DuplicateRun) and out[3] is None
        _, pending = q.snapshot()
        assert [r.run_id for r in pending] == ["b", "p", "a", "c"]
        assert [r.number for r in pending] == [3, 1, 2, 4]  # numbered in submission order, refused ones skipped
        assert q.live("p").number == 1, "a refused duplicate never takes the original run out of the queue"
        assert all(q.store.get(r) is not None for r in "abcp")
        recovered, _ = Store(tmp_path / "db.sqlite3").recover()
        assert [r.run_id for r in recovered] == ["b", "p", "a", "c"], "positions are persisted as with submit"
    finally:
        q.store.close()


def test_submit_many_drops_rows_the_database_refused(tmp_path):
    q = _queue(tmp_path)
    try:
        q.store.insert(run_row("old", {})).result()  # finished long ago: in the database, not in the queue
        out = q.submit_many([(run_row("x", {}), False, False), (run_row("old", {}), False, False)]).result()
        assert out[0] is None and isinstance(out[1], DuplicateRun)  # check_duplicate=False: found by the insert
        _, pending = q.snapshot()
        assert [r.run_id for r in pending] == ["x"]
    finally:
        q.store.close()


def test_submit_many_write_failure_leaves_nothing_queued(tmp_path):
    q = _queue(tmp_path)
    failed: Future = Future()
    failed.set_exception(sqlite3.OperationalError("disk I/O error"))
    q.store.insert_many = lambda rows: failed  # type: ignore[method-assign]
    try:
        with pytest.raises(sqlite3.OperationalError):
            q.submit_many([(run_row("x", {}), False, True), (run_row("y", {}), True, True)]).result()
        assert q.remaining() == 0 and q.live("x") is None
    finally:
        q.store.close()


# -- the batcher ---------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_one_loop_turn_is_one_write(tmp_path):
    q = _queue(tmp_path)
    batcher = SubmitBatcher(q)
    try:
        rows = [run_row(f"r{i}", {"i": i}) for i in range(6)]
        futs = [batcher.submit(r, False, False) for r in rows]
        futs.append(batcher.submit(run_row("r2", {}), False, True))  # the same id twice in one batch
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert results[:6] == [None] * 6 and isinstance(results[6], DuplicateRun)
        assert batcher.batches == 1 and batcher.submitted == 7
        assert all(q.store.get(r.run_id) is not None for r in rows), "answered only once committed"
        assert q.store.get("r2").workflow == {"i": 2}
        # later submissions go in later writes, in order
        more = [batcher.submit(run_row(f"s{i}", {}), False, False) for i in range(3)]
        await asyncio.gather(*more)
        assert batcher.batches == 2
        _, pending = q.snapshot()
        assert [r.run_id for r in pending] == [f"r{i}" for i in range(6)] + ["s0", "s1", "s2"]
    finally:
        q.store.close()


@pytest.mark.asyncio
async def test_a_cancelled_waiter_does_not_break_the_batch(tmp_path):
    q = _queue(tmp_path)
    batcher = SubmitBatcher(q)
    try:
        first = batcher.submit(run_row("a", {}), False, False)
        second = batcher.submit(run_row("b", {}), False, False)
        first.cancel()  # the client went away
        await second
        assert q.store.get("a") is not None and q.store.get("b") is not None
    finally:
        q.store.close()


@pytest.mark.asyncio
async def test_concurrent_requests_are_answered_after_their_commit(live):
    blocker = await live.submit(count_flow(0, steps=3000, delay=0.01))
    await live.wait_run(blocker, states=("running",))
    store = live.loom.store
    before = live.loom.submitter.batches

    async def one(i: int) -> str:
        if i % 2:
            status, body = await live.post("/prompt", {"prompt": comfy_count(i), "client_id": f"c{i}"})
            run_id = body["prompt_id"]
        else:
            status, body = await live.post("/api/v1/runs", {"workflow": count_flow(i), "client_id": f"c{i}"})
            run_id = body["run_id"]
        assert status == 200, body
        assert store.get(run_id) is not None, "acknowledged, so committed (the read connection sees commits only)"
        return run_id

    ids = await asyncio.gather(*(one(i) for i in range(24)))
    assert len(set(ids)) == 24
    assert live.loom.submitter.submitted >= 24 and live.loom.submitter.batches - before <= 24
    status, q = await live.get("/api/v1/queue")
    assert sorted(r["run_id"] for r in q["pending"]) == sorted(ids)
    numbers = [r["number"] for r in q["pending"]]
    assert numbers == sorted(numbers) and len(set(numbers)) == 24
    await live.post("/api/v1/interrupt")
    await live.request("DELETE", "/api/v1/queue")


@pytest.mark.asyncio
async def test_duplicate_ids_in_flight_and_failed_writes(live):
    blocker = await live.submit(count_flow(0, steps=3000, delay=0.01))
    await live.wait_run(blocker, states=("running",))
    body = {"prompt": comfy_count(1), "prompt_id": "same-id"}
    (s1, b1), (s2, b2) = await asyncio.gather(live.post("/prompt", body), live.post("/prompt", body))
    assert sorted([s1, s2]) == [200, 409]
    refused = b1 if s1 == 409 else b2
    assert refused["error"]["type"] == "duplicate_run_id" and "node_errors" in refused
    assert live.loom.queue.live("same-id") is not None, "the accepted run stays queued"

    failed: Future = Future()
    failed.set_exception(sqlite3.OperationalError("disk I/O error"))
    store = live.loom.store
    store.insert_many = lambda rows: failed  # type: ignore[method-assign]
    try:
        status, body = await live.post("/api/v1/runs", {"workflow": count_flow(2), "run_id": "not-saved"})
        assert status == 503 and body["error"]["type"] == "not_persisted" and "disk I/O error" in body["error"]["message"]
        status, body = await live.post("/prompt", {"prompt": comfy_count(3), "prompt_id": "not-saved-either"})
        assert status == 503 and body["error"]["type"] == "not_persisted"
    finally:
        del store.insert_many
    assert live.loom.queue.live("not-saved") is None and live.loom.queue.live("not-saved-either") is None
    assert (await live.get("/api/v1/runs/not-saved"))[0] == 404
    assert (await live.post("/api/v1/runs", {"workflow": count_flow(2), "run_id": "not-saved"}))[0] == 200
    await live.post("/api/v1/interrupt")
    await live.request("DELETE", "/api/v1/queue")


def test_run_ids_are_uuid4():
    for _ in range(600):  # more than one pool of randomness
        dashed, plain = new_ids.dashed(), new_ids.hex()
        for u in (uuid.UUID(dashed), uuid.UUID(plain)):
            assert u.version == 4 and u.variant == uuid.RFC_4122
        assert str(uuid.UUID(dashed)) == dashed and uuid.UUID(plain).hex == plain
    assert len({new_ids.hex() for _ in range(10000)}) == 10000


# -- coalesced queue status ----------------------------------------------------------------------------------
class _Socket:
    def __init__(self, client_id: str, dialect: str) -> None:
        self.client_id = client_id
        self.dialect = dialect
        self.sent: list[str] = []

    def send(self, item: str) -> None:
        self.sent.append(item)


@pytest.mark.asyncio
async def test_status_burst_is_coalesced_and_ends_with_the_final_size():
    import json

    size = [0]
    hub = Hub(lambda: (size[0], None), status_interval=0.05)
    native, comfy = _Socket("a", "native"), _Socket("b", "comfy")
    hub.attach(native)  # type: ignore[arg-type]
    hub.attach(comfy)  # type: ignore[arg-type]
    native.sent.clear()
    comfy.sent.clear()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(200):  # a burst of submissions over ~0.2 s
        size[0] += 1
        hub.queue_changed()
        await asyncio.sleep(0.001)
    burst = loop.time() - start
    await asyncio.sleep(0.12)
    sizes = [json.loads(m)["data"]["queue_remaining"] for m in native.sent]
    comfy_sizes = [json.loads(m)["data"]["status"]["exec_info"]["queue_remaining"] for m in comfy.sent]
    assert sizes[0] == 1, "the first change after a quiet moment goes out at once"
    assert sizes[-1] == 200 and comfy_sizes[-1] == 200, "the last message tells the final size"
    assert len(sizes) <= burst / 0.05 + 2 and len(sizes) < 100, "at most one message per interval"
    assert sizes == sorted(sizes) and comfy_sizes == sizes and hub.status_broadcasts == len(sizes)

    await asyncio.sleep(0.06)  # quiet: the next change is sent within the loop turn, not after the interval
    size[0] = 7
    hub.queue_changed()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert json.loads(native.sent[-1])["data"]["queue_remaining"] == 7


@pytest.mark.asyncio
async def test_status_over_websocket_reports_the_final_queue_size(live):
    ws = await live.ws("watcher", path="/ws")
    blocker = await live.submit(count_flow(0, steps=3000, delay=0.01))
    await live.wait_run(blocker, states=("running",))
    await asyncio.gather(*(live.submit(count_flow(i)) for i in range(1, 16)))
    msgs = await read_until(ws, lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 16,
                            timeout=5)
    statuses = [m for m in msgs if m["type"] == "status"]
    assert len(statuses) < 17, "changes of one burst are coalesced"
    await asyncio.sleep(0.15)
    assert live.loom.queue.remaining() == 16
    await live.post("/api/v1/interrupt")
    await live.request("DELETE", "/api/v1/queue")
    msgs = await read_until(ws, lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0,
                            timeout=5)
    await ws.close()


def test_acknowledged_burst_survives_kill9(server_process):
    """Every run whose submission was answered is in the database, even when the server dies right after."""
    from concurrent.futures import ThreadPoolExecutor

    a = server_process("--no-warmup")
    blocker = a.call("POST", "/api/v1/runs", {"workflow": count_flow(0, steps=5000, delay=0.01)})[1]["run_id"]
    a.wait_run(blocker, states=("running",))

    def submit(i: int) -> str:
        if i % 2:
            status, body = a.call("POST", "/prompt", {"prompt": comfy_count(i), "client_id": f"k{i % 4}"})
            assert status == 200, body
            return body["prompt_id"]
        status, body = a.call("POST", "/api/v1/runs", {"workflow": count_flow(i)})
        assert status == 200, body
        return body["run_id"]

    with ThreadPoolExecutor(8) as pool:
        acknowledged = list(pool.map(submit, range(40)))
    a.kill9()

    b = server_process("--no-warmup")
    for run_id in acknowledged:
        status, rec = b.call("GET", f"/api/v1/runs/{run_id}")
        assert status == 200, f"acknowledged run {run_id} was lost"
    assert b.wait_run(acknowledged[-1])["status"] == "success"
