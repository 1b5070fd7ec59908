"""The open model's POST on the wire: the request head built once per (path, headers), each
request only its Content-Length and body.

    Wire.post(path, headers, body)
        head  = cache[(path, headers)]     HTTPClient._build_request, once (Host, User-Agent,
                                           validation as geventhttpclient builds them)
        sock  = pool.get_socket()          geventhttpclient's keep-alive pool and timeouts
                                           (its idle check by the real select(), no yield)
        send(head + Content-Length + body) one send() (sendall only for the rest)
        -> HTTPSocketPoolResponse(sock)    geventhttpclient's parser; release() returns sock

HTTPClient.request merges default and given headers into a new Headers, validates them and
the path, decides on chunked transfer and formats the head for every request; for a bytes
body to a fixed path that is the same string each time. gevent's sendall() adds a
getsockopt() per call. And the pool's check that an idle keep-alive socket is still alive
used gevent's select(timeout=0), which yields to the hub after polling: a round trip
inside the measured latency of every request; here the same poll by the real select().
What request() also did and a POST here does not need: chunked and
100-continue bodies, proxies, and reading an early answer after a reset while sending
(a POST is never retried there either). Without the internals it relies on (another
geventhttpclient), `post` is HTTPClient.request itself.
"""

from __future__ import annotations

from typing import Any

from gevent import monkey
from geventhttpclient.response import HTTPSocketPoolResponse

__all__ = ["Wire"]

_LENGTH = "Content-Length"
_MARK = "0"  # a placeholder Content-Length in the cached head, cut off before use
_select = monkey.get_original("select", "select")


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
        self._headers_type = getattr(http, "headers_type", None)

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

    def post(self, path: str, headers: dict[str, str], body: bytes) -> Any:
        """POST `body`: the response (read it, then release() it), as HTTPClient.request."""
        pool = self._pool
        if pool is None:
            return self.http.request("POST", path, body=body, headers=headers)
        data = b"%bContent-Length: %d\r\n\r\n%b" % (self.head(path, headers), len(body), body)
        sock = pool.get_socket()
        try:
            sent = sock.send(data)
            if sent < len(data):
                sock.sendall(memoryview(data)[sent:])
        except BaseException:
            pool.release_socket(sock)
            raise
        return HTTPSocketPoolResponse(
            sock,
            pool,
            block_size=self._block_size,
            method="POST",
            headers_type=self._headers_type,
        )


def _socket_alive(sock: Any) -> bool:
    """An idle pooled socket is alive unless closed or readable (a FIN, or stray bytes)."""
    if sock is None:
        return False
    try:
        return bool(sock.fileno() >= 0 and not _select([sock], [], [], 0.0)[0])
    except (OSError, ValueError):
        return False
