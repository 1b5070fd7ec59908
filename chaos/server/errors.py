"""The chaos server's one exception tree.

ChaosServerError
 ├── ApiError      an HTTP API failure with its status code; rendered as upstream does:
 │                 {"error": "<message>", "status": <code>}
 └── ConfigError   a bad --config file or command-line value (the CLI exits 2)
"""

from __future__ import annotations


class ChaosServerError(Exception):
    """Base of everything the chaos server raises on purpose."""


class ApiError(ChaosServerError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def wrap(self, detail: str) -> ApiError:
        """Go's ``joinError``: ``<message>: <detail>`` with the same status."""
        return ApiError(self.status, f"{self.message}: {detail}")


class ConfigError(ChaosServerError):
    """A bad config file or option; the message names the file/field and the fix."""


# Upstream's error values (Shopify/toxiproxy api.go), same wording and status.
BAD_REQUEST_BODY = ApiError(400, "bad request body")
MISSING_FIELD = ApiError(400, "missing required field")
PROXY_NOT_FOUND = ApiError(404, "proxy not found")
PROXY_EXISTS = ApiError(409, "proxy already exists")
INVALID_STREAM = ApiError(400, "stream was invalid, can be either upstream or downstream")
INVALID_TOXIC_TYPE = ApiError(400, "invalid toxic type")
TOXIC_EXISTS = ApiError(409, "toxic already exists")
TOXIC_NOT_FOUND = ApiError(404, "toxic not found")
