"""The control server of a live run: faults by hand while load runs, over its FaultSchedule.

    browser: GET / (the page) ─┐
    spikegate fault ... ───────┴─> ControlServer: 127.0.0.1:<ephemeral>, a daemon thread
                                     └─> ControlApi.handle() ─> FaultSchedule.add/remove/clear
                                           └─> events.jsonl: fault_start / fault_stop,
                                               "source": "manual"

    GET  /              the live page (charts, load and fault forms, halt; no external assets)
    GET  /static/NAME   the page's vendored chart library (uPlot, harness/templates/VENDORED.md)
    GET  /stream        server-sent events: hello, then every per-second row, sample and event
                        of the run (harness/livefeed.py), `end` when the run ends
    GET  /load          the load under your hand: {"t", "rps_now", "rate", "spike", ...}
    POST /load          {"rate": arrivals/s} or {"factor": N} (N x base_rps) -> 200
    POST /load/stop     rate 0 -> 200;  POST /load/start: back to the scenario's shape -> 200
    POST /load/spike    {"peak" | "peak_factor", "for_s"} -> 201: peak for for_s, then back
    POST /halt          every fault off, a spike ended, the load held at base_rps -> 200
                        (every load body may carry "source": "cli" | "page" | "api")
    GET  /faults        {"t", "run", "active": [...], "proxies": [...], "catalog": [...]}
    POST /faults        {"fault", "proxy"?, "params"?, "for_s"?} -> 201 the active fault
    POST /faults/clear  takes every active fault off -> 200
    DELETE /faults/ID   takes one fault off -> 200; unknown ID -> 404 naming the active ones

Manual faults always expire: `for_s` defaults to DEFAULT_FOR_S and is at most MAX_FOR_S, and
the schedule resets the chaos server when the run ends. Bad input is a 400/422 naming the
field, a chaos server failure a 502; nothing a client sends can stop the run.

Load: LoadControl writes RUN_DIR/control/load.json (locustfiles/live_rate.py; every Locust
process polls it) and emits load_set / load_spike_start / load_spike_end to events.jsonl.
How clients find a live run: harness/liverun.py. The page: harness/templates/control.html.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Self, cast

from spikegate.chaos.errors import ChaosError
from spikegate.chaos.faults import FAULTS, SHORTHANDS, build_fault, fault_params, resolve_fault
from spikegate.chaos.schedule import ActiveFault, FaultSchedule
from spikegate.contract.load import MAX_RPS, LoadSection
from spikegate.contract.rundir import LOAD_CONTROL_FILE, SCENARIO_FILE
from spikegate.harness.livefeed import LiveFeed, sse
from spikegate.locustfiles.live_rate import LoadDoc, Spike, read_doc, write_doc
from spikegate.locustfiles.shapes import Shape, make_shape

__all__ = [
    "DEFAULT_FOR_S",
    "MAX_BODY_BYTES",
    "MAX_FOR_S",
    "ControlApi",
    "ControlServer",
    "LoadControl",
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
MAX_STREAMS = 4  # open live pages at once; each holds a connection while the run lasts
KEEPALIVE_S = 10.0
REQUEST_TIMEOUT_S = 5.0
STATIC_FILES = {"uplot.min.js": "text/javascript", "uplot.min.css": "text/css"}
_BODY_FIELDS = ("fault", "proxy", "params", "for_s")
_SOURCES = ("cli", "page", "api")
EventSink = Callable[[dict[str, Any]], object]


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


def _number(value: object) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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


# --- the load under your hand ------------------------------------------------------------------
class LoadControl:
    """The live load of one run: the override rate and the spike, written to
    RUN_DIR/control/load.json for the Locust processes, each change an event.

    `clock()` is seconds since t0 (the event log's `t`); `on_event` takes a row that carries
    its own `t` (orchestrator's _EventLog.write, as the fault schedule's rows). A spike ends
    by itself in the generators at until_t; a timer here only records load_spike_end then.
    Thread-safe: the control server runs each request in its own thread."""

    def __init__(
        self,
        run_dir: Path,
        load: LoadSection,
        *,
        clock: Callable[[], float],
        on_event: EventSink | None = None,
        max_for_s: float = MAX_FOR_S,
    ) -> None:
        self.path = run_dir / LOAD_CONTROL_FILE
        self.load = load
        self.shape: Shape = make_shape(load)
        self.clock = clock
        self.on_event = on_event
        self.max_for_s = float(max_for_s)
        # a document already there (e.g. written before Locust started, for `up --idle`):
        # its state and version go on, so every later change is newer for the generators
        try:
            self.doc = read_doc(self.path) or LoadDoc()
        except (OSError, ValueError):
            self.doc = LoadDoc()
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._closed = False

    @classmethod
    def for_run(
        cls, run_dir: Path, *, clock: Callable[[], float], on_event: EventSink | None
    ) -> LoadControl:
        """From the run directory's resolved scenario.toml [load]; ValueError if unreadable."""
        path = run_dir / SCENARIO_FILE
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8")).get("load", {})
            load = LoadSection.model_validate(raw)
        except (OSError, ValueError) as exc:
            raise ValueError(f"no [load] from {path}: {exc}") from None
        return cls(run_dir, load, clock=clock, on_event=on_event)

    # -- reading -----------------------------------------------------------------------------
    def rps_at(self, t: float, doc: LoadDoc | None = None) -> float:
        """The intended rate at t under `doc` (default: the current document)."""
        return float((doc or self.doc).rate_fn(self.shape.rate_at)(t))

    def show(self) -> dict[str, Any]:
        with self._lock:
            self._sync()
            t = self.clock()
            doc = self.doc
            spike = None
            if doc.spike is not None and t < doc.spike.until_s:
                s = doc.spike
                spike = {
                    "peak": s.peak,
                    "from_t": round(s.from_s, 3),
                    "until_t": round(s.until_s, 3),
                    "remaining_s": round(max(0.0, s.until_s - t), 3),
                }
            return {
                "t": round(t, 3),
                "version": doc.version,
                "rate": doc.rate,
                "spike": spike,
                "rps_now": round(self.rps_at(t), 3),
                "shape": self.load.shape,
                "base_rps": self.load.base_rps,
                "duration_s": self.load.duration_s,
                "max_rps": MAX_RPS,
                "max_for_s": self.max_for_s,
            }

    # -- changing ----------------------------------------------------------------------------
    def set_rate(self, rate: float | None, *, action: str = "set", source: str = "api") -> None:
        """Hold `rate` arrivals/s from now (None: the scenario's shape again)."""
        with self._lock:
            self._check_open()
            self._sync()
            t = self.clock()
            old = self.doc
            doc = LoadDoc(version=old.version + 1, rate=rate, spike=old.spike)
            self._write(doc)
            self._emit(
                "load_set",
                t,
                action=action,
                rate=rate,
                previous=old.rate,
                rps_before=self.rps_at(t, old),
                rps_after=self.rps_at(t, doc),
                source=source,
            )

    def spike(self, peak: float, for_s: float, *, source: str = "api") -> dict[str, Any]:
        """`peak` arrivals/s from now for `for_s` seconds, then back (a running spike ends)."""
        with self._lock:
            self._check_open()
            self._sync()
            t = self.clock()
            self._end_spike(t, "replaced")
            old = self.doc
            until = t + for_s
            doc = LoadDoc(
                version=old.version + 1, rate=old.rate, spike=Spike(peak, from_s=t, until_s=until)
            )
            self._write(doc)
            self._emit(
                "load_spike_start",
                t,
                peak=peak,
                for_s=for_s,
                until_t=round(until, 6),
                rps_before=self.rps_at(t, old),
                source=source,
            )
            timer = threading.Timer(for_s, self._expire, args=(doc.version,))
            timer.daemon = True
            self._timer = timer
            timer.start()
            return self.show()

    def halt(self, *, source: str = "api") -> None:
        """Back to the scenario's base_rps at once: a running spike ends (reason "cleared")
        and the rate is held at base_rps (action "halt"). Nothing for a closed model."""
        with self._lock:
            self._check_open()
            self._sync()
            if self.load.mode == "closed":
                return
            self._end_spike(self.clock(), "cleared")
            self.set_rate(self.load.base_rps, action="halt", source=source)

    def _expire(self, version: int) -> None:
        with self._lock:
            self._sync()
            spike = self.doc.spike
            if self._closed or spike is None or self.doc.version != version:
                return
            self._end_spike(spike.until_s, "expired")

    def _sync(self) -> None:
        """Another writer (the orchestrator: `up --idle`, a session's end) may have written a
        newer document: it is the state from now on; a running spike it dropped ends now."""
        try:
            disk = read_doc(self.path)
        except (OSError, ValueError):
            return
        if self._closed or disk is None or disk.version <= self.doc.version:
            return
        old, self.doc = self.doc, disk
        spike = old.spike
        if spike is None or disk.spike == spike:
            return
        timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        t = self.clock()
        end = min(t, spike.until_s)
        reason = "expired" if t >= spike.until_s else "replaced"
        self._emit(
            "load_spike_end", end, peak=spike.peak, rps_after=self.rps_at(end, disk), reason=reason
        )

    def _end_spike(self, t: float, reason: str) -> None:
        """Record the end of a running spike at t and drop it from the document."""
        spike = self.doc.spike
        timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if spike is None:
            return
        end = min(t, spike.until_s)
        if t >= spike.until_s:
            reason = "expired"
        doc = LoadDoc(version=self.doc.version + 1, rate=self.doc.rate)
        if not self._closed:
            self._write(doc)
        else:
            self.doc = doc
        self._emit(
            "load_spike_end", end, peak=spike.peak, rps_after=self.rps_at(end, doc), reason=reason
        )

    def close(self) -> None:
        """The run ends: a running spike ends now (reason run_end); no change after this."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.doc.spike is not None:
                self._end_spike(self.clock(), "run_end")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the load control is closed")

    def _write(self, doc: LoadDoc) -> None:
        write_doc(self.path, doc)
        self.doc = doc

    def _emit(self, kind: str, t: float, **details: Any) -> None:
        if self.on_event is None:
            return
        row = {"t": round(t, 6), "kind": kind, **details}
        try:
            self.on_event(row)
        except Exception:  # the change is made; a broken sink must not undo or hide it
            log.exception("load event sink failed for %r", row)


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
        load: LoadControl | None = None,
        on_event: EventSink | None = None,
        feed: LiveFeed | None = None,
    ) -> None:
        if not 0 < default_for_s <= max_for_s:
            raise ValueError(f"default_for_s must be in (0, max_for_s] (got {default_for_s!r})")
        self.schedule = schedule
        self.proxies = proxies
        self.info = dict(info or {})
        self.default_for_s = float(default_for_s)
        self.max_for_s = float(max_for_s)
        self.hosts: frozenset[str] = frozenset()
        self.load = load
        self.load_error: str | None = None
        self.feed = feed
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        if load is None:
            self._wire_load(on_event)

    def _wire_load(self, on_event: EventSink | None) -> None:
        """Without a LoadControl handed in: one over info["run_dir"] (its scenario.toml),
        on the fault schedule's clock, recording into the fault schedule's event sink (the
        orchestrator's events.jsonl) unless `on_event` is given."""
        run_dir = self.info.get("run_dir")
        if not isinstance(run_dir, str) or not run_dir:
            self.load_error = "this control server has no run directory"
            return
        sink = on_event if on_event is not None else getattr(self.schedule, "_on_event", None)
        try:
            self.load = LoadControl.for_run(
                Path(run_dir), clock=self.schedule.elapsed, on_event=sink
            )
        except ValueError as exc:
            self.load_error = str(exc)

    def close(self) -> None:
        """The run ends: the load control records a running spike's end; open live pages
        get `end` (the orchestrator closes the feed first, with the run's status)."""
        if self.load is not None:
            self.load.close()
        if self.feed is not None:
            self.feed.close("ended", round(self._now_t(), 3))

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
        if path == "/favicon.ico":  # a browser asks; nothing to show, no error in its console
            return Response(204, b"", "image/x-icon")
        if path.startswith("/static/"):
            self._allow(req, "GET")
            return self._static(path.removeprefix("/static/"))
        if path == "/stream":
            raise _Invalid(405, "GET /stream is a server-sent event stream; open it with GET")
        if path == "/faults":
            self._allow(req, "GET", "POST")
            return self._list() if req.method == "GET" else self._add(req.body)
        if path == "/faults/clear":
            self._allow(req, "POST")
            return self._clear()
        if path == "/load" or path.startswith("/load/"):
            return self._load_route(req, path)
        if path == "/halt":
            self._allow(req, "POST")
            return self._halt(req.body)
        if path.startswith("/faults/") and path.count("/") == 2:
            self._allow(req, "DELETE")
            return self._remove(urllib.parse.unquote(path.rsplit("/", 1)[1]))
        raise _Invalid(404, f"no such path {path!r}: try GET /, GET /faults or GET /load")

    @staticmethod
    def _static(name: str) -> Response:
        kind = STATIC_FILES.get(name)
        if kind is None:
            raise _Invalid(404, f"no static file {name!r} (there are: {', '.join(STATIC_FILES)})")
        body = resources.files("spikegate.harness.templates").joinpath(name).read_bytes()
        return Response(200, body, f"{kind}; charset=utf-8")

    # -- the live stream ---------------------------------------------------------------------
    def stream(
        self, req: Request, stopping: Callable[[], bool] = lambda: False
    ) -> Response | Iterator[bytes]:
        """GET /stream: an error Response, or the event stream's chunks: hello, the feed's
        backlog (after Last-Event-ID when a page reconnects), then each new message as it
        lands, a keepalive comment in silences, until `end` (the run ended) or `stopping()`."""
        try:
            self._check_origin(req)
        except _Invalid as exc:
            return Response.error(exc.status, exc.message)
        feed = self.feed
        if feed is None:
            return Response.error(503, "this control server has no live feed")
        headers = {k.lower(): v for k, v in req.headers.items()}
        try:
            after = max(0, int(headers.get("last-event-id", "0") or 0))
        except ValueError:
            after = 0
        if not self._streams.acquire(blocking=False):
            return Response.error(
                429, f"{MAX_STREAMS} live pages are open on this run already; close one"
            )
        return self._chunks(feed, after, stopping)

    def _chunks(self, feed: LiveFeed, after: int, stopping: Callable[[], bool]) -> Iterator[bytes]:
        try:
            yield b"retry: 2000\n\n" + sse(feed.hello(round(self._now_t(), 3)), with_id=False)
            seq, quiet = after, 0.0
            while not stopping():
                msgs = feed.wait(seq, timeout=1.0)
                if not msgs:
                    quiet += 1.0
                    if quiet >= KEEPALIVE_S:
                        quiet = 0.0
                        yield b": keepalive\n\n"
                    continue
                quiet = 0.0
                yield b"".join(sse(m) for m in msgs)
                seq = msgs[-1].seq
                if msgs[-1].kind == "end":
                    return
        finally:
            self._streams.release()

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

    # -- load endpoints ----------------------------------------------------------------------
    def _load_route(self, req: Request, path: str) -> Response:
        load = self.load
        if load is None:
            raise _Invalid(503, f"no load control in this run ({self.load_error})")
        if path == "/load":
            self._allow(req, "GET", "POST")
            if req.method == "GET":
                return Response.json(200, load.show())
        if load.load.mode == "closed" and req.method == "POST":
            raise _Invalid(
                409,
                "this run's load is closed-model (load.mode = closed: users back to back): "
                "it has no arrival rate to change; use load.mode = open",
            )
        if path == "/load":
            data = self._load_body(req.body, ("rate", "factor", "source"))
            rate = self._rate_of(data, "rate", "factor", load)
            if rate is None:
                raise _Invalid(422, 'rate is required: {"rate": 300} arrivals/s or {"factor": 3}')
            load.set_rate(rate, source=self._source(data))
            return Response.json(200, load.show())
        if path in ("/load/stop", "/load/start"):
            self._allow(req, "POST")
            data = self._load_body(req.body, ("source",))
            stop = path == "/load/stop"
            load.set_rate(0.0 if stop else None, action="stop" if stop else "start",
                          source=self._source(data))  # fmt: skip
            return Response.json(200, load.show())
        if path == "/load/spike":
            self._allow(req, "POST")
            data = self._load_body(req.body, ("peak", "peak_factor", "for_s", "source"))
            peak = self._rate_of(data, "peak", "peak_factor", load)
            if peak is None:
                raise _Invalid(422, 'peak is required: {"peak": 900} arrivals/s or '
                                    '{"peak_factor": 3}')  # fmt: skip
            raw_for = data.get("for_s")
            if raw_for is None:
                raise _Invalid(422, f"for_s is required: seconds in (0, {load.max_for_s:g}]")
            for_s = self._for_s(raw_for, "for_s", load.max_for_s, "a spike always ends")
            return Response.json(201, load.spike(peak, for_s, source=self._source(data)))
        raise _Invalid(404, f"no such path {path!r}: /load, /load/stop, /load/start, /load/spike")

    def _halt(self, body: bytes) -> Response:
        """Every fault off and the load at the scenario's base rate, at once."""
        data = self._load_body(body, ("source",))
        source = self._source(data)
        ids = [a.id for a in self.schedule.active()]
        self.schedule.clear()
        out: dict[str, Any] = {"removed": ids, "active": self._active(), "load": None}
        if self.load is not None:
            self.load.halt(source=source)
            out["load"] = self.load.show()
        return Response.json(200, out)

    @staticmethod
    def _load_body(body: bytes, fields: Sequence[str]) -> dict[str, Any]:
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Invalid(400, f"the body is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise _Invalid(400, 'the body must be a JSON object such as {"rate": 300}')
        unknown = sorted(k for k in data if k not in fields)
        if unknown:
            raise _Invalid(
                422, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(fields)}"
            )
        return data

    @staticmethod
    def _rate_of(
        data: Mapping[str, Any], name: str, factor_name: str, load: LoadControl
    ) -> float | None:
        """Arrivals/s from `name`, or `factor_name` x base_rps; exactly one of them."""
        if name in data and factor_name in data:
            raise _Invalid(422, f"give {name} or {factor_name}, not both")
        if factor_name in data:
            factor = data[factor_name]
            if not _number(factor) or factor < 0:
                raise _Invalid(422, f"{factor_name} must be a number >= 0, a multiple of the "
                                    f"scenario's base_rps (got {factor!r})")  # fmt: skip
            value = float(factor) * load.load.base_rps
            where = f"{factor_name} {factor!r} x base_rps {load.load.base_rps:g}"
        elif name in data:
            value = data[name]
            if not _number(value):
                raise _Invalid(422, f"{name} must be a number of arrivals/s (got {value!r})")
            where = f"{name} {value!r}"
        else:
            return None
        if not 0 <= value <= MAX_RPS:
            raise _Invalid(422, f"{where}: the rate must be in [0, {MAX_RPS:g}] arrivals/s")
        return float(value)

    @staticmethod
    def _source(data: Mapping[str, Any]) -> str:
        source = data.get("source", "api")
        if source not in _SOURCES:
            raise _Invalid(422, f"source must be one of {', '.join(_SOURCES)} (got {source!r})")
        return str(source)

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

    def _for_s(
        self,
        value: object,
        name: str = "for_s",
        max_s: float | None = None,
        why: str = "manual faults always expire",
    ) -> float:
        if value is None:
            return self.default_for_s
        top = self.max_for_s if max_s is None else max_s
        if not _number(value) or not 0 < value <= top:  # type: ignore[operator]
            raise _Invalid(
                422, f"{name} must be a number of seconds in (0, {top:g}] (got {value!r}); {why}"
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
        self.stopping = False
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
        req = Request(self.command, self.path, body, headers)
        if self.command == "GET" and self.path.split("?", 1)[0].rstrip("/") == "/stream":
            self._stream(api, req)
            return
        self._send(api.handle(req))

    def _stream(self, api: ControlApi, req: Request) -> None:
        server = cast(_HttpServer, self.server)
        out = api.stream(req, stopping=lambda: server.stopping)
        if isinstance(out, Response):
            self._send(out)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            for chunk in out:
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:  # the page went away (or stalled past the timeout): end its stream
            pass
        finally:
            cast(Any, out).close()  # release the stream's slot now, not at garbage collection

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
        self.api.close()
        http.stopping = True  # open streams end within a second
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
