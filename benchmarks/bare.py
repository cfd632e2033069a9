"""The baseline of the single-submit probe: a bare aiohttp server answering ``POST /cluster/jobs``.

It does what any handler of that route must do and nothing more: read the body, decode the JSON, make a
job id and answer the same response body as a node (``{"success", "job_id", "status", "timestamp"}``).
No auth, no validation, no Redis, no logging, no middleware: the floor that aiohttp and this machine
set for the route, measured by the same client in the same way as the node (see ``bench.submit_probe``).

Run as ``python -m benchmarks.bare --port N``; it serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid
from datetime import UTC, datetime

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()


async def submit(request: web.Request) -> web.Response:
    body = msgspec.json.decode(await request.read())
    if not isinstance(body, dict):
        return web.Response(status=400)
    answer = {"success": True, "job_id": f"job-{uuid.uuid4().hex}", "status": "submitted",
              "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    return web.Response(body=_encoder.encode(answer), content_type="application/json")


async def live(request: web.Request) -> web.Response:
    return web.Response(body=b'{"success":true,"status":"alive"}', content_type="application/json")


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/cluster/jobs", submit)
    app.router.add_get("/health/live", live)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    opts = parser.parse_args()
    asyncio.run(serve(opts.host, opts.port))


if __name__ == "__main__":
    main()
