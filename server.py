"""Latent Loom server: parse the flags, build the aiohttp app, serve until Ctrl+C.

    python server.py [--host 127.0.0.1] [--port 8188] [--token T | --insecure] [--custom-nodes DIR] ...

Binding anything but a loopback address needs `--token` (or an explicit `--insecure`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Sequence

from engine.settings import Settings, offline

log = logging.getLogger("latentloom.server")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="server.py", description="Latent Loom server: editor, native API and ComfyUI-compatible API.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need --token or --insecure)")
    p.add_argument("--port", type=int, default=8188, help="port (default 8188; 0 picks a free one)")
    p.add_argument("--models-dir", default="models", help="models folder (checkpoints/, loras/, controlnet/, vae/, embeddings/, clip/)")
    p.add_argument("--output-dir", default="output", help="where SaveImage writes (default output/)")
    p.add_argument("--input-dir", default="input", help="where LoadImage reads and uploads go (default input/)")
    p.add_argument("--user-dir", default=None, help="user data: queue and history database, saved workflows")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--fast", action="store_true", help="GPU fast mode: compiled, CUDA-graph sampling")
    p.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default="auto", help="compute dtype on CUDA (auto = fp16; the CPU uses fp32)")
    p.add_argument("--vram-budget-gb", type=float, default=None, help="GPU memory models may occupy before idle ones move to the CPU (default 85%% of the card)")
    p.add_argument("--token", default=None, help="require this token (Authorization: Bearer, cookie loom_token, ?token=)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without a token")
    p.add_argument("--custom-nodes", action="append", default=[], metavar="DIR", help="also load node modules from DIR (opt-in)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload (default 50 MB)")
    p.add_argument("--cache-gb", type=float, default=None, help="memory for cached node outputs (default 4 GB)")
    p.add_argument("--no-warmup", action="store_true", help="do not import torch in the background at start (tests)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from(args: argparse.Namespace):
    from engine.api import ServerConfig

    settings = Settings(models_dir=Path(args.models_dir), input_dir=Path(args.input_dir), output_dir=Path(args.output_dir),
                        device=args.device, fast=args.fast)
    if args.user_dir:
        settings.user_dir = Path(args.user_dir)
    if args.cache_gb is not None:
        settings.cache_bytes = int(args.cache_gb * 1024**3)
    settings.dtype = args.dtype
    if args.vram_budget_gb is not None:
        settings.vram_budget_bytes = int(args.vram_budget_gb * 1024**3)
    return ServerConfig(host=args.host, port=args.port, token=args.token or None, insecure=args.insecure,
                        max_upload_mb=args.max_upload_mb, settings=settings, custom_nodes=[Path(d) for d in args.custom_nodes],
                        warm_up=not args.no_warmup)


async def serve(config, ready: asyncio.Event | None = None) -> None:
    from aiohttp import web

    from engine.api import create_app
    from engine.api.state import LOOM

    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []  # the real port when --port 0
    port = sockets[0].getsockname()[1] if sockets else config.port
    host = f"[{config.host}]" if ":" in config.host else config.host
    for err in app[LOOM].registry.load_errors:
        log.warning("%s", err)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    print(f"Latent Loom listening on http://{host}:{port}", flush=True)  # after the handlers: stop is clean from now
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        print("Latent Loom stopping", flush=True)
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    offline()
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from engine.api.security import is_loopback_host

    if not is_loopback_host(args.host) and not args.token and not args.insecure:
        sys.stderr.write(f"error: listening on {args.host} exposes the server to the network; "
                         "give --token TOKEN (clients send it as a Bearer header or cookie) or --insecure\n")
        return 2
    if args.token is not None and len(args.token) < 8:
        sys.stderr.write("error: --token must be at least 8 characters\n")
        return 2
    config = config_from(args)
    # The worker thread runs node code while the event loop answers requests. Python hands the GIL over
    # every 5 ms by default, so each socket read or write of the loop could wait up to 5 ms behind a busy
    # worker; 0.5 ms keeps request latency low (measured: ~1.5x the submissions/s under load).
    sys.setswitchinterval(0.0005)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
