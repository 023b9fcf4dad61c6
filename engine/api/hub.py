"""The WebSocket hub: who is connected, and delivery of run events to the client that submitted the run.

A run's events go to the sockets of its client id (to everyone when it has none); queue status goes to
everyone: right away after a quiet moment, then at most once per `status_interval` while the queue keeps
changing (a burst of submissions), always with the queue as it is when the message is made, so the last
message of a burst tells the final queue size. Each socket speaks one dialect: native (`/api/v1/ws`) or
ComfyUI (`/ws`). Every connection has its own outgoing queue drained by its own task, so a slow client
never holds up the others and message order per socket is kept. `LoopBridge` is the queue's listener: it
hops from the worker thread onto the event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import threading
import uuid
from typing import Callable

from aiohttp import WSMsgType, web

from ..store import RunRow
from .comfy_events import ComfyMapper, comfy_status, preview_frame
from .errors import ApiError, dumps

log = logging.getLogger(__name__)

MAX_BACKLOG = 20000  # messages waiting for one socket before it counts as dead
STATUS_INTERVAL = 0.05  # seconds between two queue status broadcasts while the queue keeps changing
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


class Connection:
    def __init__(self, ws: web.WebSocketResponse, client_id: str, dialect: str) -> None:
        self.ws = ws
        self.client_id = client_id
        self.dialect = dialect
        self._out: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump())

    def send(self, item: str | bytes) -> None:
        if self._out.qsize() > MAX_BACKLOG:
            log.warning("client %s does not read its WebSocket; closing it", self.client_id)
            self._out.put_nowait(None)
            return
        self._out.put_nowait(item)

    async def _pump(self) -> None:
        ws = self.ws
        try:
            while True:
                item = await self._out.get()
                if item is None or ws.closed:
                    break
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(item)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            if not ws.closed:
                await ws.close()

    async def close(self) -> None:
        if self._task is not None:
            self._out.put_nowait(None)
            try:
                await asyncio.wait_for(self._task, 2.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()


class Hub:
    """Sockets by client id; `status_source` says (queue_remaining, running run id) when asked."""

    def __init__(self, status_source: Callable[[], tuple[int, str | None]], status_interval: float = STATUS_INTERVAL) -> None:
        self.status_source = status_source
        self.status_interval = status_interval
        self._by_client: dict[str, set[Connection]] = {}
        self._all: set[Connection] = set()
        self._status_scheduled = False
        self._status_sent_at = float("-inf")  # loop time of the last broadcast
        self.status_broadcasts = 0
        self.mappers: dict[str, ComfyMapper] = {}

    def attach(self, conn: Connection) -> None:
        self._all.add(conn)
        self._by_client.setdefault(conn.client_id, set()).add(conn)
        remaining, running = self.status_source()
        if conn.dialect == "comfy":
            conn.send(dumps(comfy_status(remaining, sid=conn.client_id)))
        else:
            conn.send(dumps({"type": "status", "data": {"queue_remaining": remaining, "running": running, "sid": conn.client_id}}))

    def detach(self, conn: Connection) -> None:
        self._all.discard(conn)
        peers = self._by_client.get(conn.client_id)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self._by_client[conn.client_id]

    def connections(self) -> int:
        return len(self._all)

    def _targets(self, client_id: str | None) -> set[Connection] | list[Connection]:
        if client_id is None:
            return self._all
        return self._by_client.get(client_id, ())  # type: ignore[return-value]

    # -- queue status (coalesced: one message per loop turn, at most one per status_interval) -------------
    def queue_changed(self) -> None:
        if self._status_scheduled:
            return  # the message already on its way reads the queue when it is made
        self._status_scheduled = True
        loop = asyncio.get_running_loop()
        wait = self._status_sent_at + self.status_interval - loop.time()
        if wait > 0:
            loop.call_later(wait, self._send_status)
        else:
            loop.call_soon(self._send_status)

    def _send_status(self) -> None:
        self._status_scheduled = False
        if not self._all:
            return
        self._status_sent_at = asyncio.get_running_loop().time()
        self.status_broadcasts += 1
        remaining, running = self.status_source()
        native = comfy = None
        for conn in self._all:
            if conn.dialect == "comfy":
                if comfy is None:
                    comfy = dumps(comfy_status(remaining))
                conn.send(comfy)
            else:
                if native is None:
                    native = dumps({"type": "status", "data": {"queue_remaining": remaining, "running": running}})
                conn.send(native)

    # -- run events ------------------------------------------------------------------------------------
    def publish(self, run_id: str, client_id: str | None, event: dict) -> None:
        mapper = self.mappers.get(run_id)
        if mapper is None:
            mapper = self.mappers[run_id] = ComfyMapper(run_id)
        comfy_msgs = mapper.map(event)
        targets = self._targets(client_id)
        if not targets:
            return
        native = None
        comfy = None
        for conn in targets:
            if conn.dialect == "comfy":
                if comfy is None:
                    comfy = [dumps(m) for m in comfy_msgs]
                for text in comfy:
                    conn.send(text)
            else:
                if native is None:
                    data = {k: v for k, v in event.items() if k != "type"}
                    native = dumps({"type": event["type"], "data": data})
                conn.send(native)

    def finish(self, run_id: str, client_id: str | None, final_events: list[dict]) -> None:
        for event in final_events:
            self.publish(run_id, client_id, event)
        self.mappers.pop(run_id, None)

    def preview(self, run_id: str, client_id: str | None, node_id: str, jpeg: bytes) -> None:
        targets = self._targets(client_id)
        if not targets:
            return
        native = None
        frame = None
        for conn in targets:
            if conn.dialect == "comfy":
                frame = frame or preview_frame(jpeg)
                conn.send(frame)
            else:
                if native is None:
                    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
                    native = dumps({"type": "preview", "data": {"run_id": run_id, "node_id": node_id, "image": url}})
                conn.send(native)

    async def close_all(self) -> None:
        for conn in list(self._all):
            await conn.close()


class LoopBridge:
    """The queue's listener: worker-thread calls become event-loop calls on the hub."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hub: Hub) -> None:
        self.loop = loop
        self.hub = hub
        self.loop_thread = threading.get_ident()

    def _call(self, fn: Callable, *args: object) -> None:
        if threading.get_ident() == self.loop_thread:
            fn(*args)
        else:
            try:
                self.loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed while a run was ending (shutdown)
                pass

    def queue_changed(self) -> None:
        self._call(self.hub.queue_changed)

    def run_event(self, row: RunRow, event: dict) -> None:
        self._call(self.hub.publish, row.run_id, row.client_id, event)

    def run_preview(self, row: RunRow, node_id: str, jpeg: bytes) -> None:
        self._call(self.hub.preview, row.run_id, row.client_id, node_id, jpeg)

    def run_done(self, row: RunRow, final_events: list[dict]) -> None:
        self._call(self.hub.finish, row.run_id, row.client_id, final_events)


async def serve_socket(request: web.Request, hub: Hub, dialect: str) -> web.StreamResponse:
    """One WebSocket: register it, send status, read (and ignore) what the client says, clean up."""
    client_id = request.query.get("clientId") or request.query.get("client_id") or uuid.uuid4().hex
    if not _CLIENT_ID.match(client_id):
        raise ApiError(400, "invalid_request", "clientId must be 1-128 letters, digits or _.:-")
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1024 * 1024)
    await ws.prepare(request)
    conn = Connection(ws, client_id, dialect)
    conn.start()
    hub.attach(conn)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.detach(conn)
        await conn.close()
    return ws
