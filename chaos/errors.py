"""The exception tree of the chaos client layer.

Everything the client wrapper raises after talking to a Toxiproxy-compatible server::

    ChaosError                      base of every chaos client failure
     ├── ChaosUnavailable           no answer: connection refused, reset or timed out
     ├── BadResponse                the server answered something that is not its API
     └── ChaosAPIError              the server answered with an error status (.status, .message)
          ├── InvalidRequest        400: bad body, unknown toxic type, bad attribute
          ├── Forbidden             403: e.g. a browser User-Agent
          ├── NotFound              404: unknown path
          │    ├── ProxyNotFound    404: "proxy not found"
          │    └── ToxicNotFound    404: "toxic not found"
          ├── MethodNotAllowed      405
          ├── Conflict              409: proxy or toxic already exists
          └── ServerError           5xx: e.g. the listen port is in use

Errors of toxiproxy-python and of requests are translated into this tree at exactly one
place, ``ChaosClient._call`` in ``chaos/client.py``. Bad arguments given by the caller are
``ValueError`` raised before any request is sent.
"""

from __future__ import annotations

__all__ = [
    "BadResponse",
    "ChaosAPIError",
    "ChaosError",
    "ChaosUnavailable",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "ProxyNotFound",
    "ServerError",
    "ToxicNotFound",
    "error_for_status",
]


class ChaosError(Exception):
    """Base of every failure talking to the chaos proxy's API."""


class ChaosUnavailable(ChaosError):
    """The server did not answer: refused, reset or timed out."""


class BadResponse(ChaosError):
    """The server answered, but not with a body this API defines."""


class ChaosAPIError(ChaosError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str, *, method: str = "", path: str = "") -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{status} {message}{where}")


class InvalidRequest(ChaosAPIError):
    """400: the server rejected the request body or an attribute value."""


class Forbidden(ChaosAPIError):
    """403: the server refused the request (browser User-Agents are refused)."""


class NotFound(ChaosAPIError):
    """404: no such path."""


class ProxyNotFound(NotFound):
    """404: no proxy of that name."""


class ToxicNotFound(NotFound):
    """404: the proxy exists, the toxic does not."""


class MethodNotAllowed(ChaosAPIError):
    """405: known path, wrong method."""


class Conflict(ChaosAPIError):
    """409: a proxy or toxic of that name already exists."""


class ServerError(ChaosAPIError):
    """5xx: the server failed, e.g. it could not bind the listen address."""


_BY_STATUS: dict[int, type[ChaosAPIError]] = {
    400: InvalidRequest,
    403: Forbidden,
    405: MethodNotAllowed,
    409: Conflict,
}


def error_for_status(
    status: int, message: str, *, method: str = "", path: str = ""
) -> ChaosAPIError:
    """Build the exception for an error status and the server's error message."""
    cls: type[ChaosAPIError]
    if status == 404:
        lowered = message.lower()
        if "toxic" in lowered:
            cls = ToxicNotFound
        elif "proxy" in lowered:
            cls = ProxyNotFound
        else:
            cls = NotFound
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, ChaosAPIError)
    return cls(status, message, method=method, path=path)
