"""A counting reverse proxy for endpoint-limit tests (tests/integration/test_runners.py): what
reaches the real server behind it, and the most requests in flight at once."""

from __future__ import annotations

import asyncio
import threading

from tests.conftest import free_port


class CountingProxy:
    """Forwards every request to ``upstream`` and records the most requests in flight at once."""

    def __init__(self, upstream: str):
        from aiohttp import ClientSession, web

        self.upstream, self.port = upstream.rstrip("/"), free_port()
        self.inflight = self.most = self.total = 0
        self._ready = threading.Event()

        async def forward(request: web.Request) -> web.Response:
            self.inflight += 1
            self.total += 1
            self.most = max(self.most, self.inflight)
            try:
                body = await request.read()
                headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
                async with self._session.request(request.method, self.upstream + request.path_qs, data=body,
                                                 headers=headers) as r:
                    return web.Response(body=await r.read(), status=r.status, content_type=r.content_type)
            finally:
                self.inflight -= 1

        async def main():
            self._session = ClientSession()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", forward)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._ready.set()
            while not self._stop:
                await asyncio.sleep(0.05)
            await self._session.close()
            await self._runner.cleanup()

        self._stop = False
        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.api_base = f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.most = self.total = 0

    def stop(self) -> None:
        self._stop = True
        self._thread.join(10)


