"""The control server of a live run: faults by hand while load runs, over its FaultSchedule.

    browser: GET / (the page) ─┐
    spikegate fault ... ───────┴─> ControlServer: 127.0.0.1:<ephemeral>, a daemon thread
                                     └─> ControlApi.handle() ─> FaultSchedule.add/remove/clear
                                           └─> events.jsonl: fault_start / fault_stop,
                                               "source": "manual"

    GET  /              the control page (self-contained HTML, no external assets)
    GET  /faults        {"t", "run", "active": [...], "proxies": [...], "catalog": [...]}
    POST /faults        {"fault", "proxy"?, "params"?, "for_s"?} -> 201 the active fault
    POST /faults/clear  takes every active fault off -> 200
    DELETE /faults/ID   takes one fault off -> 200; unknown ID -> 404 naming the active ones

Manual faults always expire: `for_s` defaults to DEFAULT_FOR_S and is at most MAX_FOR_S, and
the schedule resets the chaos server when the run ends. Bad input is a 400/422 naming the
field, a chaos server failure a 502; nothing a client sends can stop the run.

How clients find a live run: harness/liverun.py. The page: harness/templates/control.html.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Self, cast

from spikegate.chaos.errors import ChaosError
from spikegate.chaos.faults import FAULTS, SHORTHANDS, build_fault, fault_params, resolve_fault
from spikegate.chaos.schedule import ActiveFault, FaultSchedule

__all__ = [
    "DEFAULT_FOR_S",
    "MAX_BODY_BYTES",
    "MAX_FOR_S",
    "ControlApi",
    "ControlServer",
    "Request",
    "Response",
    "catalog",
    "control_page",
    "fault_json",
]

log = logging.getLogger(__name__)

DEFAULT_FOR_S = 30.0
MAX_FOR_S = 600.0
MAX_BODY_BYTES = 16_384
MAX_CONNECTIONS = 16
REQUEST_TIMEOUT_S = 5.0
_BODY_FIELDS = ("fault", "proxy", "params", "for_s")


# --- the API, free of HTTP plumbing ------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, data: object) -> Response:
        return cls(status, (json.dumps(data, sort_keys=True) + "\n").encode())

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        return cls.json(status, {"error": message})

    def data(self) -> Any:
        return json.loads(self.body)


class _Invalid(Exception):
    """A client mistake: its status and a message naming the field and the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _fits(fault: str, proxy: str) -> bool:
    try:
        resolve_fault(fault, proxy)
    except ValueError:
        return False
    return True


def catalog(proxies: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every fault a client can add: its parameters with their defaults, its default proxy
    (shorthands) and which of `proxies` it can go on."""
    out: list[dict[str, Any]] = []
    for name in sorted([*FAULTS, *SHORTHANDS]):
        shorthand = SHORTHANDS.get(name)
        base = shorthand.base if shorthand else name
        try:
            default_proxy: str | None = resolve_fault(name, None)[0]
        except ValueError:
            default_proxy = None  # a base fault needs an explicit proxy
        doc = (FAULTS[base].__doc__ or "").strip().splitlines()
        out.append(
            {
                "name": name,
                "base": base,
                "doc": doc[0] if doc else "",
                "params": fault_params(build_fault(name)),
                "proxy": default_proxy,
                "proxies": [p for p in proxies if _fits(name, p)],
            }
        )
    return out


def fault_json(fault: ActiveFault, now_t: float) -> dict[str, Any]:
    """An active fault as the API shows it; `remaining_s` None when it has no end."""
    remaining = None if fault.ends_t is None else round(max(0.0, fault.ends_t - now_t), 3)
    return {
        "id": fault.id,
        "fault": fault.fault,
        "proxy": fault.proxy,
        "params": dict(fault.params),
        "source": fault.source,
        "started_t": round(fault.started_t, 3),
        "ends_t": None if fault.ends_t is None else round(fault.ends_t, 3),
        "remaining_s": remaining,
    }


class ControlApi:
    """The control endpoints over one run's FaultSchedule; `handle` never raises.

    `proxies()` names the run's proxies (a ChaosError from it is a 502). `hosts`, once set,
    is the set of Host values accepted: a page of another origin (or a DNS-rebound name)
    must not be able to inject faults, so a foreign Host or Origin gets 403.
    """

    def __init__(
        self,
        schedule: FaultSchedule,
        proxies: Callable[[], Sequence[str]],
        *,
        info: Mapping[str, Any] | None = None,
        default_for_s: float = DEFAULT_FOR_S,
        max_for_s: float = MAX_FOR_S,
    ) -> None:
        if not 0 < default_for_s <= max_for_s:
            raise ValueError(f"default_for_s must be in (0, max_for_s] (got {default_for_s!r})")
        self.schedule = schedule
        self.proxies = proxies
        self.info = dict(info or {})
        self.default_for_s = float(default_for_s)
        self.max_for_s = float(max_for_s)
        self.hosts: frozenset[str] = frozenset()

    def handle(self, req: Request) -> Response:
        try:
            self._check_origin(req)
            return self._route(req)
        except _Invalid as exc:
            return Response.error(exc.status, exc.message)
        except ChaosError as exc:
            return Response.error(502, f"the chaos server failed: {exc}")
        except RuntimeError as exc:  # the schedule closed: the run is ending
            return Response.error(409, f"the run is ending, no fault can change now ({exc})")
        except Exception as exc:  # never let a request take the run down
            log.exception("control request %s %s failed", req.method, req.path)
            return Response.error(500, f"internal error: {exc!r}")

    # -- routing -----------------------------------------------------------------------------
    def _route(self, req: Request) -> Response:
        path = req.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/":
            self._allow(req, "GET")
            return Response(200, control_page(), "text/html; charset=utf-8")
        if path == "/faults":
            self._allow(req, "GET", "POST")
            return self._list() if req.method == "GET" else self._add(req.body)
        if path == "/faults/clear":
            self._allow(req, "POST")
            return self._clear()
        if path.startswith("/faults/") and path.count("/") == 2:
            self._allow(req, "DELETE")
            return self._remove(urllib.parse.unquote(path.rsplit("/", 1)[1]))
        raise _Invalid(404, f"no such path {path!r}: try GET / or GET /faults")

    @staticmethod
    def _allow(req: Request, *methods: str) -> None:
        if req.method not in methods:
            allowed = ", ".join(methods)
            raise _Invalid(405, f"{req.method} is not allowed on {req.path} (allowed: {allowed})")

    def _check_origin(self, req: Request) -> None:
        if not self.hosts:
            return
        headers = {k.lower(): v for k, v in req.headers.items()}
        host = headers.get("host", "")
        if host not in self.hosts:
            raise _Invalid(403, f"Host {host!r} is not this control server's address")
        origin = headers.get("origin")
        if origin is not None and origin not in {f"http://{h}" for h in self.hosts}:
            raise _Invalid(403, f"Origin {origin!r} may not control this run")

    # -- endpoints ---------------------------------------------------------------------------
    def _now_t(self) -> float:
        return self.schedule.elapsed()

    def _active(self) -> list[dict[str, Any]]:
        now = self._now_t()
        return [fault_json(a, now) for a in self.schedule.active()]

    def _list(self) -> Response:
        proxies = sorted(self.proxies())
        return Response.json(
            200,
            {
                "t": round(self._now_t(), 3),
                "run": self.info,
                "active": self._active(),
                "proxies": proxies,
                "catalog": catalog(proxies),
                "default_for_s": self.default_for_s,
                "max_for_s": self.max_for_s,
            },
        )

    def _add(self, body: bytes) -> Response:
        fault, proxy, params, for_s = self._parse_add(body)
        try:
            resolved, _ = resolve_fault(fault, proxy, params)
        except ValueError as exc:
            raise _Invalid(422, str(exc)) from None
        known = sorted(self.proxies())
        if resolved not in known:
            raise _Invalid(
                422,
                f"proxy {resolved!r} is not a proxy of this run "
                f"(proxies: {', '.join(known) or 'none'})",
            )
        try:
            active = self.schedule.add(fault, proxy, params, duration_s=for_s)
        except ValueError as exc:
            raise _Invalid(422, str(exc)) from None
        return Response.json(201, fault_json(active, self._now_t()))

    def _parse_add(self, body: bytes) -> tuple[str, str | None, dict[str, object], float]:
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else None
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Invalid(400, f"the body is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise _Invalid(400, 'the body must be a JSON object such as {"fault": "redis_latency"}')
        unknown = sorted(k for k in data if k not in _BODY_FIELDS)
        if unknown:
            raise _Invalid(
                422, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_BODY_FIELDS)}"
            )
        fault = data.get("fault")
        if not isinstance(fault, str) or not fault:
            names = ", ".join(sorted([*FAULTS, *SHORTHANDS]))
            raise _Invalid(422, f"fault is required: one of {names} (got {fault!r})")
        proxy = data.get("proxy")
        if proxy is not None and (not isinstance(proxy, str) or not proxy):
            raise _Invalid(422, f"proxy must be a proxy name such as 'redis' (got {proxy!r})")
        params = data.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise _Invalid(422, f'params must be an object such as {{"latency_ms": 50}} '
                                f"(got {params!r})")  # fmt: skip
        return fault, proxy, params, self._for_s(data.get("for_s"))

    def _for_s(self, value: object) -> float:
        if value is None:
            return self.default_for_s
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not 0 < value <= self.max_for_s:  # type: ignore[arg-type, operator]
            raise _Invalid(
                422,
                f"for_s must be a number of seconds in (0, {self.max_for_s:g}] (got {value!r}); "
                "manual faults always expire",
            )
        return float(value)  # type: ignore[arg-type]

    def _remove(self, fault_id: str) -> Response:
        try:
            self.schedule.remove(fault_id)
        except ValueError:
            known = ", ".join(a.id for a in self.schedule.active()) or "none"
            raise _Invalid(404, f"fault {fault_id!r} is not active (active: {known})") from None
        return Response.json(200, {"removed": [fault_id], "active": self._active()})

    def _clear(self) -> Response:
        ids = [a.id for a in self.schedule.active()]
        self.schedule.clear()
        return Response.json(200, {"removed": ids, "active": self._active()})


# --- HTTP plumbing --------------------------------------------------------------------------
class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], api: ControlApi) -> None:
        self.api = api
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: drop, the run goes on
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("control connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT_S
    server_version = "spikegate-control"

    def _serve(self) -> None:
        api = cast(_HttpServer, self.server).api
        raw = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self._send(Response.error(411, "send the body with a Content-Length"))
            return
        try:
            length = int(raw or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send(Response.error(400, f"Content-Length {raw!r} is not a byte count"))
            return
        if length > MAX_BODY_BYTES:
            self._discard(length)
            self._send(Response.error(413, f"the body is over {MAX_BODY_BYTES} bytes"))
            return
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        self._send(api.handle(Request(self.command, self.path, body, headers)))

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def _discard(self, length: int) -> None:
        """Read a refused body (up to a bound): closing on unread data would reset the
        connection and lose the 413 on its way to the client."""
        left = min(length, 64 * MAX_BODY_BYTES)
        while left > 0:
            chunk = self.rfile.read(min(left, 65_536))
            if not chunk:
                return
            left -= len(chunk)

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(resp.body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control %s " + format, self.client_address[0], *args)


class ControlServer:
    """`ControlApi` on 127.0.0.1:<ephemeral> in a daemon thread; `.url` once started."""

    def __init__(self, api: ControlApi, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api = api
        self._address = (host, port)
        self._http: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("the control server is not started")
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._http = _HttpServer(self._address, self.api)
        port = self.port
        self.api.hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="control-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting and free the port; idempotent."""
        http, self._http = self._http, None
        if http is None:
            return
        http.shutdown()
        http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the control page ------------------------------------------------------------------------
def control_page() -> bytes:
    """The self-contained control page (harness/templates/control.html)."""
    return resources.files("spikegate.harness.templates").joinpath("control.html").read_bytes()
