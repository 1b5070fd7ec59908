"""The chaos server as a library object: the API listener plus the proxy collection."""

from __future__ import annotations

import asyncio
import logging
import random
from types import TracebackType

from . import schema
from .api import Api
from .errors import ApiError, ConfigError
from .httpd import HttpServer
from .proxy import DIAL_TIMEOUT_S, ProxyCollection, format_address

log = logging.getLogger("chaos.server")


def load_config(path: str) -> list[schema.ProxySpec]:
    """A ``--config`` file: the JSON array ``POST /populate`` takes."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror or exc}") from None
    try:
        return schema.parse_populate(data)
    except ApiError as exc:
        raise ConfigError(
            f"config {path}: {exc.message} (expected a JSON array of "
            '{"name", "upstream", "listen"?, "enabled"?} objects)'
        ) from None


class ChaosServer:
    """``async with ChaosServer(port=0) as server: ...`` serves the API at ``server.url``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8474,
        seed: int | None = None,
        dial_timeout_s: float = DIAL_TIMEOUT_S,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        if dial_timeout_s <= 0:
            raise ValueError(f"dial_timeout_s must be > 0, got {dial_timeout_s}")
        self.host = host
        self.port = port
        self.seed = seed
        self.proxies = ProxyCollection(random.Random(seed), dial_timeout_s)
        self._http = HttpServer(Api(self.proxies).handle)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://{format_address(self.host, self.port)}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._http.serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def populate(self, specs: list[schema.ProxySpec]) -> None:
        for spec in specs:
            try:
                await self.proxies.add_or_replace(spec)
            except ApiError as exc:
                raise ConfigError(f"proxy {spec.name!r}: {exc.message}") from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._http.close_idle()
        self.proxies.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> ChaosServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
