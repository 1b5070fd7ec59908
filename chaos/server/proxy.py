"""A proxy: a listener, its open connections and its two toxic chains; and the collection.

Disabling a proxy closes its listener (connects are refused) and every open connection;
enabling binds the address it last had, so a proxy created on port 0 keeps its port.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket

from .connection import Connection
from .errors import PROXY_EXISTS, PROXY_NOT_FOUND, ApiError
from .link import Counters
from .outstanding import Outstanding
from .schema import STREAMS, ProxySpec, ToxicWrapper

log = logging.getLogger("chaos.server")

DEFAULT_LISTEN = "127.0.0.1:0"
DIAL_TIMEOUT_S = 5.0


def split_listen(listen: str) -> tuple[str, int]:
    """Go's SplitHostPort plus port parsing; raises ValueError with Go's wording."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        raise ValueError(f"address {listen}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {listen}: too many colons in address")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {port}: invalid port")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _resolve(host: str) -> str:
    if host in ("localhost", ""):
        return "127.0.0.1" if host else "::"
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return host
    except OSError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    ipv4 = [info for info in infos if info[0] == socket.AF_INET]
    return str((ipv4 or infos)[0][4][0])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Proxy:
    def __init__(self, spec: ProxySpec, rng: random.Random, dial_timeout_s: float) -> None:
        self.name = spec.name
        self.listen = spec.listen or DEFAULT_LISTEN
        self.requested_listen = self.listen
        self.upstream = spec.upstream
        self.enabled = False
        self.rng = rng
        self.dial_timeout_s = dial_timeout_s
        self.counters = {stream: Counters() for stream in STREAMS}
        self.outstanding = Outstanding()
        self.chains: dict[str, list[ToxicWrapper]] = {stream: [] for stream in STREAMS}
        self.connections: set[Connection] = set()
        self.accepted = 0  # client connections accepted since the proxy was created
        self._server: asyncio.AbstractServer | None = None

    # --- Owner protocol for connections -------------------------------------------------------
    def chain(self, stream: str) -> tuple[ToxicWrapper, ...]:
        return tuple(self.chains[stream])

    def adopt(self, conn: Connection) -> None:
        self.accepted += 1
        self.connections.add(conn)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)

    # --- lifecycle -----------------------------------------------------------------------------
    def matches(self, spec: ProxySpec) -> bool:
        """The same proxy as ``spec`` asks for (populate keeps it, toxics and all)."""
        listen = spec.listen or DEFAULT_LISTEN
        return spec.upstream == self.upstream and listen in (self.listen, self.requested_listen)

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            host, port = split_listen(self.listen)
            host = await _resolve(host)
            sock = _bind(host, port)
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.strerror:  # Go's wording: "bind: address ..."
                reason = "bind: " + exc.strerror[0].lower() + exc.strerror[1:]
            else:
                reason = str(exc)
            raise ApiError(500, f"listen tcp {self.listen}: {reason}") from None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection.protocol_factory(self, self.outstanding), sock=sock
        )
        bound_host, bound_port = sock.getsockname()[:2]
        self.listen = format_address(bound_host, bound_port)
        self.enabled = True
        log.info("proxy %s: listening on %s -> %s", self.name, self.listen, self.upstream)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            log.info("proxy %s: stopped listening on %s", self.name, self.listen)
        self.enabled = False
        self.drop_connections()

    def drop_connections(self) -> None:
        for conn in tuple(self.connections):
            conn.close()

    # --- toxics --------------------------------------------------------------------------------
    def toxics(self) -> list[ToxicWrapper]:
        return [*self.chains["upstream"], *self.chains["downstream"]]

    def find_toxic(self, name: str) -> ToxicWrapper | None:
        return next((t for t in self.toxics() if t.name == name), None)

    def add_toxic(self, wrapper: ToxicWrapper) -> None:
        self.chains[wrapper.stream].append(wrapper)
        for conn in tuple(self.connections):
            conn.rechain(wrapper.stream)

    def update_toxic(
        self, wrapper: ToxicWrapper, attributes: dict[str, int], toxicity: float
    ) -> None:
        for name, value in attributes.items():
            setattr(wrapper.toxic, name, value)
        reroll = toxicity != wrapper.toxicity
        wrapper.toxicity = toxicity
        for conn in tuple(self.connections):
            conn.rechain(wrapper.stream, updated=wrapper, reroll=reroll)

    def remove_toxic(self, wrapper: ToxicWrapper) -> None:
        self.chains[wrapper.stream].remove(wrapper)
        for conn in tuple(self.connections):
            conn.rechain(wrapper.stream, removed=wrapper)

    def reset_toxics(self) -> None:
        for wrapper in self.toxics():
            self.remove_toxic(wrapper)


class ProxyCollection:
    """All proxies by name, in creation order."""

    def __init__(self, rng: random.Random, dial_timeout_s: float = DIAL_TIMEOUT_S) -> None:
        self.rng = rng
        self.dial_timeout_s = dial_timeout_s
        self.proxies: dict[str, Proxy] = {}

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    async def add(self, spec: ProxySpec) -> Proxy:
        """Create and (when enabled) start; a bind failure registers nothing."""
        if spec.name in self.proxies:
            raise PROXY_EXISTS
        proxy = Proxy(spec, self.rng, self.dial_timeout_s)
        if spec.enabled:
            await proxy.start()
        self.proxies[spec.name] = proxy
        return proxy

    async def add_or_replace(self, spec: ProxySpec) -> Proxy:
        existing = self.proxies.get(spec.name)
        if existing is not None:
            if existing.matches(spec):
                return existing
            self.remove(spec.name)
        return await self.add(spec)

    def remove(self, name: str) -> None:
        self.get(name).stop()
        del self.proxies[name]

    async def update(self, proxy: Proxy, spec: ProxySpec) -> None:
        """Upstream's Proxy.Update: a new address drops connections; then match ``enabled``."""
        if spec.listen != proxy.listen or spec.upstream != proxy.upstream:
            proxy.stop()
            proxy.listen = proxy.requested_listen = spec.listen or DEFAULT_LISTEN
            proxy.upstream = spec.upstream
        if spec.enabled and not proxy.enabled:
            await proxy.start()
        elif not spec.enabled and proxy.enabled:
            proxy.stop()

    async def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        for proxy in tuple(self.proxies.values()):
            await proxy.start()
            proxy.reset_toxics()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
