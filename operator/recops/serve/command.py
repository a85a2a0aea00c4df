"""`recops serve --model URI [--port 8080] [--track stable|canary] [--event-log URI]`.

Binds first (so liveness answers while a model downloads and loads), then locates the model
(downloading s3:// ones), loads it, runs a warm-up inference and only then reports ready.
SIGTERM (and SIGINT): readiness turns false, new inference requests get 503, in-flight ones
finish, the event log is flushed, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from recops.serve import settings as serve_settings

log = logging.getLogger("recops.serve")

EXIT_OK, EXIT_MODEL, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    serve_settings.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    # Models are local directories by the time they load: nothing is fetched from a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        resolved = serve_settings.resolve(args)
    except serve_settings.SettingsError as err:
        print(f"recops serve: {err}", file=sys.stderr)
        return EXIT_USAGE
    if resolved.feedback_key_is_random:
        log.warning("!" * 78)
        log.warning("INSECURE: feedback tokens are signed with a random per-process key "
                    "(--insecure-random-feedback-key). Feedback sent to any other replica, or to this one after a "
                    "restart, is rejected as forged. Set RECOPS_FEEDBACK_KEY from a Secret in production.")
        log.warning("!" * 78)
    if resolved.event_log_uri and not resolved.pseudonym_salt:
        log.warning("RECOPS_PSEUDONYM_SALT is not set: user ids are left out of the event log")
    return asyncio.run(_serve(resolved))


async def _serve(settings: serve_settings.ServeSettings) -> int:
    from aiohttp import web

    from recops.serve.app import Server
    from recops.serve.connections import ConnectionGuard, default_limit, raise_fd_limit

    server = Server(settings)
    fd_limit = raise_fd_limit()
    guard = ConnectionGuard(settings.max_connections or default_limit(fd_limit))
    server.connections = guard
    # keepalive_timeout: aiohttp's timer that closes a connection with no request, stalled headers, or idle.
    runner = web.AppRunner(server.app, handle_signals=False, access_log=None, keepalive_timeout=settings.idle_timeout_s)
    await runner.setup()
    assert runner.server is not None
    guard.attach(runner.server)
    site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=5.0)
    try:
        await site.start()
    except OSError as err:
        print(f"recops serve: cannot listen on {settings.host}:{settings.port}: {err}", file=sys.stderr)
        await runner.cleanup()
        server.close()
        return EXIT_USAGE
    sockets = getattr(site._server, "sockets", None) or []  # the real port when --port 0
    port = sockets[0].getsockname()[1] if sockets else settings.port
    log.info("listening on http://%s:%d (track %s; at most %d connections)", settings.host, port, settings.track,
             guard.limit)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    load = asyncio.create_task(_load(server, settings))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({load, stopped}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = EXIT_OK
    if load.done() and load.exception() is not None:
        print(f"recops serve: {load.exception()}", file=sys.stderr)
        exit_code = EXIT_MODEL
    else:
        await stopped
        log.info("stopping: refusing new requests, finishing %d in flight", server.in_flight)
        load.cancel()
        await server.drain()
    await runner.cleanup()
    server.close()
    stopped.cancel()
    log.info("stopped")
    return exit_code


async def _load(server: object, settings: serve_settings.ServeSettings) -> None:
    from recops.serve.app import Server
    from recops.serve.model import Scorer, locate

    assert isinstance(server, Server)
    loop = asyncio.get_running_loop()
    location = await loop.run_in_executor(None, locate, settings.model_uri)
    if location.downloaded:
        server.downloaded_dir = str(location.directory)
    manifest = location.manifest
    server.attach_manifest(manifest.model_version, manifest.task, manifest.architecture)
    log.info("loading %s (%s %s, version %s, runtime %s, quantization %s, %d threads)", settings.model_uri,
             manifest.task, manifest.architecture, server.model_version, settings.runtime, settings.quantization,
             settings.torch_threads)
    scorer = await loop.run_in_executor(None, lambda: Scorer(
        location, quantization=settings.quantization, device=settings.device, runtime=settings.runtime,
        max_pairs_per_pass=settings.max_pairs_per_pass, torch_threads=settings.torch_threads))
    log.info("scoring with %s", scorer.format)
    server.attach_scorer(scorer)
    await loop.run_in_executor(None, server.warm_up)
    server.ready = True
    log.info("ready: serving %s as %r", server.model_version, settings.model_name)
