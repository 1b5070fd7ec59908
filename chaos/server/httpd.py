"""A small HTTP/1.1 server on asyncio streams: keep-alive, Content-Length and chunked bodies.

Enough for every Toxiproxy client (requests, net/http, Ruby's Net::HTTP, curl) and fast to
start. Malformed requests get a 4xx and the connection is closed; nothing here raises out.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("chaos.server")

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 120.0


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _plain(status: int, text: str) -> Response:
    return Response(
        status,
        (text + "\n").encode(),
        "text/plain; charset=utf-8",
        [("X-Content-Type-Options", "nosniff")],
    )


async def _read_line(reader: asyncio.StreamReader, budget: list[int]) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise HttpError(400, "incomplete request") from None
        raise EOFError from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request header fields too large") from None
    budget[0] -= len(line)
    if budget[0] < 0:
        raise HttpError(431, "request header fields too large")
    return line.rstrip(b"\r\n")


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request:
    """One request; EOFError on a clean end of the connection, HttpError on a bad request."""
    budget = [MAX_HEADER_BYTES]
    line = await _read_line(reader, budget)
    while not line:  # tolerate blank lines between requests
        line = await _read_line(reader, budget)
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[0].isalpha():
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    while True:
        line = await _read_line(reader, budget)
        if not line:
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise HttpError(400, "malformed header line")
        headers[name.lower()] = value.strip()
        if len(headers) > MAX_HEADERS:
            raise HttpError(431, "too many header fields")
    request = Request(method, target, version, headers)
    request.body = await _read_body(reader, writer, request)
    return request


async def _read_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request
) -> bytes:
    headers = request.headers
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length_text = headers.get("content-length")
    if not chunked and length_text is None:
        return b""
    if not chunked and (length_text is None or not length_text.isdigit()):
        raise HttpError(400, "bad Content-Length")
    length = 0 if chunked else int(length_text or 0)
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    if headers.get("expect", "").lower() == "100-continue" and request.version == "HTTP/1.1":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        if not chunked:
            return await reader.readexactly(length)
        body = bytearray()
        budget = [MAX_HEADER_BYTES]
        while True:
            size_text = (await _read_line(reader, budget)).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(400, "bad chunk size") from None
            if size == 0:
                while await _read_line(reader, budget):  # trailers
                    pass
                return bytes(body)
            if size < 0 or len(body) + size > MAX_BODY_BYTES:
                raise HttpError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    except (asyncio.IncompleteReadError, EOFError):
        raise HttpError(400, "incomplete request body") from None


def render(response: Response, keep_alive: bool) -> bytes:
    status = response.status
    reason = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
    lines = [f"HTTP/1.1 {status} {reason}", f"Date: {email.utils.formatdate(usegmt=True)}"]
    if response.content_type:
        lines.append(f"Content-Type: {response.content_type}")
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    if status != 204 and status >= 200:
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if status == 204 else head + response.body


def _wants_keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


class HttpServer:
    """Serves ``handler`` on every connection; one request at a time per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._connections: set[asyncio.StreamWriter] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            keep_alive = True
            while keep_alive:
                try:
                    request = await asyncio.wait_for(read_request(reader, writer), IDLE_TIMEOUT_S)
                except (EOFError, TimeoutError, ConnectionError):
                    return
                except HttpError as exc:
                    writer.write(render(_plain(exc.status, exc.message), keep_alive=False))
                    await writer.drain()
                    return
                keep_alive = _wants_keep_alive(request)
                try:
                    response = await self.handler(request)
                except Exception:
                    log.exception("api: %s %s failed", request.method, request.path)
                    response = _plain(500, "internal server error")
                writer.write(render(response, keep_alive))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    def close_idle(self) -> None:
        for writer in tuple(self._connections):
            writer.close()
