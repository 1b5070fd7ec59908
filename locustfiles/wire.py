"""The open model's POST on the wire: the request head built once per (path, headers), each
request only its Content-Length and body.

    Wire.post(path, headers, body)
        head  = cache[(path, headers)]     HTTPClient._build_request, once (Host, User-Agent,
                                           validation as geventhttpclient builds them)
        sock  = pool.get_socket()          geventhttpclient's keep-alive pool and timeouts
                                           (its idle check by the real select(), no yield)
        send(head + Content-Length + body) one send() (sendall only for the rest)
        -> read_reply(sock)                status line, headers, body by Content-Length
                                           (or chunked, or to the close); the socket back to
                                           the pool when the answer was whole and keep-alive

HTTPClient.request merges default and given headers into a new Headers, validates them and
the path, decides on chunked transfer and formats the head for every request; for a bytes
body to a fixed path that is the same string each time. gevent's sendall() adds a
getsockopt() per call. And the pool's check that an idle keep-alive socket is still alive
used gevent's select(timeout=0), which yields to the hub after polling: a round trip
inside the measured latency of every request; here the same poll by the real select().
What request() also did and a POST here does not need: chunked and
100-continue bodies, proxies, and reading an early answer after a reset while sending
(a POST is never retried there either). Without the internals it relies on (another
geventhttpclient), `post` is HTTPClient.request itself, its answer read into a Reply.

The answer is read into a Reply (status, lower-cased headers, body) by read_reply rather
than geventhttpclient's HTTPSocketPoolResponse: that one runs llhttp with a Python callback
per header field and value, builds a Headers multi-dict and takes three release() calls,
which cost 8% of the generator's CPU per arrival at 3000/s and 25% at 8000/s (open_model.py,
same run). What it parsed that read_reply does not: trailers and obsolete header line
folding (neither is used by the targets, and a folded line only loses its continuation).
"""

from __future__ import annotations

from typing import Any

from gevent import monkey

__all__ = ["Reply", "Wire", "read_reply"]

_LENGTH = "Content-Length"
_MARK = "0"  # a placeholder Content-Length in the cached head, cut off before use
_select = monkey.get_original("select", "select")
MAX_HEAD_BYTES = 65536  # an answer's status line and headers (geventhttpclient's bound too)


class Reply:
    """A whole HTTP answer: status_code, headers (lower-cased names; a repeated header
    keeps its last value) and content. read()/get()/release() as geventhttpclient's response
    offers them, so a listener of Locust's request event can read it the same way."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def read(self) -> bytes:
        return self.content

    def get(self, name: str, default: Any = None) -> Any:
        return self.headers.get(name.lower(), default)

    def release(self) -> None:
        """Nothing to release: the socket went back to its pool when the answer was read."""

    def __repr__(self) -> str:
        return f"<Reply {self.status_code} {len(self.content)} bytes>"


class Wire:
    """POSTs of bytes bodies through `http` (a geventhttpclient HTTPClient)."""

    def __init__(self, http: Any) -> None:
        self.http = http
        # by the identity of the headers dict, kept alive here so that identity holds
        self._heads: dict[tuple[str, int], tuple[dict[str, str], bytes]] = {}
        pool = getattr(http, "_connection_pool", None)
        usable = (
            pool is not None
            and callable(getattr(http, "_build_request", None))
            and not getattr(http, "use_proxy", False)
            and getattr(http, "version", None) == "HTTP/1.1"
        )
        self._pool: Any = pool if usable else None
        if self._pool is not None and callable(getattr(self._pool, "_is_socket_alive", None)):
            self._pool._is_socket_alive = _socket_alive
        self._block_size = getattr(http, "block_size", 4096)

    def head(self, path: str, headers: dict[str, str]) -> bytes:
        """The request head up to (not including) its Content-Length line; cached by the
        identity of `headers` (the caller keeps one dict per header set)."""
        key = (path, id(headers))
        cached = self._heads.get(key)
        if cached is not None:
            return cached[1]
        text: str = self.http._build_request(
            "POST", path, body=b"", headers={**headers, _LENGTH: _MARK}
        )
        line = f"{_LENGTH}: {_MARK}\r\n"
        assert text.endswith("\r\n\r\n") and line in text
        head = text.replace(line, "", 1)[:-2].encode("latin-1")
        self._heads[key] = (headers, head)
        return head

    def post(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """POST `body`: the whole answer (the socket is back in the pool, or closed)."""
        pool = self._pool
        if pool is None:
            return _reply_of(self.http.request("POST", path, body=body, headers=headers))
        data = b"%bContent-Length: %d\r\n\r\n%b" % (self.head(path, headers), len(body), body)
        sock = pool.get_socket()
        try:
            sent = sock.send(data)
            if sent < len(data):
                sock.sendall(memoryview(data)[sent:])
        except BaseException:
            pool.release_socket(sock)
            raise
        try:
            reply, reusable = read_reply(sock.recv, self._block_size)
        except BaseException:
            pool.release_socket(sock)
            raise
        if reusable:
            pool.return_socket(sock)
        else:
            pool.release_socket(sock)
        return reply


def read_reply(recv: Any, block_size: int = 4096) -> tuple[Reply, bool]:
    """Read one answer to a POST with `recv` (a socket's): (the reply, whether the
    connection may carry the next request). Interim 1xx answers are skipped. Raises
    ConnectionError when the peer closes before the answer is whole, ValueError on a
    malformed one (the connection is then not reusable: the caller closes it)."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        while end < 0:
            if len(data) > MAX_HEAD_BYTES:
                raise ValueError("HTTP answer head too long")
            more = recv(block_size)
            if not more:
                raise ConnectionResetError("connection closed before the answer")
            data += more
            end = data.find(b"\r\n\r\n", max(0, len(data) - len(more) - 3))
        lines = data[:end].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code_text = rest[:3]
        if not version.startswith("HTTP/") or not code_text.isdigit():
            raise ValueError(f"not an HTTP status line: {lines[0][:80]!r}")
        status = int(code_text)
        data = data[end + 4 :]
        if status >= 200:
            break
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    conn = headers.get("connection", "").lower()
    keep = "close" not in conn if version != "HTTP/1.0" else "keep-alive" in conn
    if status in (204, 304):
        return Reply(status, headers, b""), keep and not data
    if "chunked" in headers.get("transfer-encoding", "").lower():
        content, data = _read_chunked(recv, block_size, data)
        return Reply(status, headers, content), keep and not data
    length_text = headers.get("content-length")
    if length_text is None:  # delimited by the close
        parts = [data]
        while more := recv(block_size):
            parts.append(more)
        return Reply(status, headers, b"".join(parts)), False
    length = int(length_text)
    while len(data) < length:
        more = recv(max(block_size, length - len(data)))
        if not more:
            raise ConnectionResetError("connection closed inside the answer's body")
        data += more
    return Reply(status, headers, data[:length]), keep and len(data) == length


def _read_chunked(recv: Any, block_size: int, data: bytes) -> tuple[bytes, bytes]:
    """A chunked body (trailers skipped): (content, bytes read past its end)."""
    parts: list[bytes] = []
    while True:
        while (eol := data.find(b"\r\n")) < 0:
            data = _more(recv, block_size, data)
        size = int(data[:eol].split(b";", 1)[0].strip() or b"x", 16)
        data = data[eol + 2 :]
        if size == 0:
            while (eol := data.find(b"\r\n")) != 0:  # trailer lines up to the empty one
                data = data[eol + 2 :] if eol > 0 else _more(recv, block_size, data)
            return b"".join(parts), data[2:]
        while len(data) < size + 2:
            data = _more(recv, block_size, data)
        parts.append(data[:size])
        data = data[size + 2 :]


def _more(recv: Any, block_size: int, data: bytes) -> bytes:
    more = recv(block_size)
    if not more:
        raise ConnectionResetError("connection closed inside a chunked body")
    return data + more


def _reply_of(resp: Any) -> Reply:
    """geventhttpclient's response (HTTPClient.request), read whole, as a Reply."""
    try:
        content = resp.read()
    finally:
        resp.release()
    headers = {str(k).lower(): str(v) for k, v in resp.items()}
    return Reply(resp.status_code, headers, content)


def _socket_alive(sock: Any) -> bool:
    """An idle pooled socket is alive unless closed or readable (a FIN, or stray bytes)."""
    if sock is None:
        return False
    try:
        return bool(sock.fileno() >= 0 and not _select([sock], [], [], 0.0)[0])
    except (OSError, ValueError):
        return False
