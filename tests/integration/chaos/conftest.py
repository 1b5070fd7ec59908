"""Fixtures for the chaos-server conformance suite.

The server under test is the embedded one (``python -m chaos.server`` as a subprocess on a free
loopback port), or a real toxiproxy-server when ``TOXIPROXY_URL`` is set; tests that rely on
the embedded server's own choices take the ``embedded`` fixture and are skipped then.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spikegate.chaos.client import ChaosClient
from spikegate.chaos.errors import ChaosUnavailable
from spikegate.chaos.server import server_command
from spikegate.harness.services import free_port

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """A tiny keep-alive HTTP client for the Toxiproxy API (exact control over headers)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.url = url
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 8474
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Resp:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"User-Agent": "spikegate-conformance/1", **(headers or {})}
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout_s
                )
            started = time.perf_counter()
            try:
                self._conn.request(method, path, body=data, headers=hdrs)
                response = self._conn.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return Resp(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                payload,
                elapsed,
            )
        raise AssertionError("unreachable")

    def get(self, path: str) -> Resp:
        return self.request("GET", path)

    def post(self, path: str, body: object = None, **kw: Any) -> Resp:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str) -> Resp:
        return self.request("DELETE", path)

    def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", **extra: Any
    ) -> dict[str, Any]:
        resp = self.post(
            "/proxies", {"name": name, "upstream": upstream, "listen": listen, **extra}
        )
        assert resp.status == 201, resp.body
        return resp.json()  # type: ignore[no-any-return]

    def add_toxic(
        self, proxy: str, type_: str, stream: str = "downstream", **attributes: int
    ) -> dict[str, Any]:
        body = {"type": type_, "stream": stream, "attributes": attributes}
        resp = self.post(f"/proxies/{proxy}/toxics", body)
        assert resp.status == 200, resp.body
        return resp.json()  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class ServerUnderTest:
    url: str
    embedded: bool
    log_path: Path | None = None


def _start_embedded(tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    log_path = tmp / "chaos-server.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        server_command(0, "--seed", "7"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    log_file.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        match = re.search(rb"API listening on (http://\S+)", log_path.read_bytes())
        if match:
            return proc, match.group(1).decode(), log_path
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"chaos server did not start:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerUnderTest]:
    url = os.environ.get("TOXIPROXY_URL")
    if url:
        yield ServerUnderTest(url.rstrip("/"), embedded=False)
        return
    proc, url, log_path = _start_embedded(tmp_path_factory.mktemp("chaos-server"))
    try:
        yield ServerUnderTest(url, embedded=True, log_path=log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def embedded(server: ServerUnderTest) -> ServerUnderTest:
    """For tests of the embedded server's own choices (divergences, internals)."""
    if not server.embedded:
        pytest.skip("asserts a choice of the embedded server (TOXIPROXY_URL is set)")
    return server


@pytest.fixture
def api(server: ServerUnderTest) -> Iterator[Api]:
    """An API client; every proxy is deleted after the test so tests stay independent."""
    client = Api(server.url)
    try:
        yield client
    finally:
        with contextlib.suppress(OSError, http.client.HTTPException):
            for name in client.get("/proxies").json():
                client.delete(f"/proxies/{name}")
        client.close()


class TcpServer:
    """A threaded upstream on 127.0.0.1:0 running ``handler(conn)`` per accepted connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.settimeout(10)
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handler(conn)
        with contextlib.suppress(OSError):
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(timeout=2)


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


@pytest.fixture
def tcp_server() -> Iterator[Callable[[Callable[[socket.socket], None]], TcpServer]]:
    servers: list[TcpServer] = []

    def start(handler: Callable[[socket.socket], None]) -> TcpServer:
        servers.append(TcpServer(handler))
        return servers[-1]

    yield start
    for srv in servers:
        srv.close()


@pytest.fixture
def echo_server(tcp_server: Callable[[Callable[[socket.socket], None]], TcpServer]) -> TcpServer:
    return tcp_server(echo)


@pytest.fixture
def upstream(echo_server: TcpServer) -> str:
    """The address of an echo server, as a proxy's upstream."""
    return echo_server.address


class Net:
    """Socket helpers for tests (a fixture, since test modules cannot import conftest)."""

    echo = staticmethod(echo)

    @staticmethod
    def connect(listen: str, timeout_s: float = 5.0) -> socket.socket:
        host, port = listen.rsplit(":", 1)
        if host in ("[::]", "", "0.0.0.0"):
            host = "127.0.0.1"
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    @staticmethod
    def recv_exactly(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            data = sock.recv(min(65536, n - len(buf)))
            if not data:
                break
            buf += data
        return bytes(buf)

    @staticmethod
    def recv_until_eof(sock: socket.socket) -> bytes:
        buf = bytearray()
        while data := sock.recv(65536):
            buf += data
        return bytes(buf)

    @staticmethod
    def port_open(listen: str) -> bool:
        try:
            Net.connect(listen, timeout_s=1.0).close()
            return True
        except OSError:
            return False


@pytest.fixture
def net() -> type[Net]:
    return Net


# --- a fresh embedded server per test (client and schedule tests) ---------------------------
REPO = Path(__file__).resolve().parents[3]


@contextlib.contextmanager
def _chaos_server(log_path: Path) -> Iterator[str]:
    """Run `python -m chaos.server` on a free port; yield its URL; stop it afterwards."""
    for _attempt in range(3):
        port = free_port()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                server_command(port),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        url = f"http://127.0.0.1:{port}"
        probe = ChaosClient(url, timeout_s=1.0)
        deadline = time.monotonic() + 20
        ready = False
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                probe.version()
                ready = True
                break
            except ChaosUnavailable:
                time.sleep(0.05)
        if ready:
            try:
                yield url
            finally:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            return
        proc.kill()
        proc.wait(5)
    pytest.fail(f"chaos server did not start; log: {log_path.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def start_chaos_server() -> Callable[[Path], contextlib.AbstractContextManager[str]]:
    """`with start_chaos_server(log_path) as url:` runs `python -m chaos.server` on a free
    port for the block (each test gets its own server and its own proxies)."""
    return _chaos_server
