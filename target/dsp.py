"""Simulated DSP bidders: seeded partners that answer OpenRTB-subset bid requests.

    python -m spikegate.target.dsp --port P1 --port P2 ...  ->  dsp-1 on P1, dsp-2 on P2, ...
    (one process)

    POST /bid      {"id", "imp": [{"id", "bidfloor"}], "site", "user", "tmax"}
                   -> 200 {"id", "seatbid": [{"seat": name,
                                              "bid": [{"id", "impid", "price", "adm"}]}]}
                   -> 204 no bid
    GET  /healthz  200
    POST /control  {"mode": "ok"|"error"|"slow"|"hang", "delay_ms": int}  (GET shows it)
    GET  /stats    request counters

Each bidder draws from its own `random.Random`, seeded from (seed, bidder index): one draw
decides bid/no-bid, then one lognormal draw per impression sets the price above the floor.
The sequence of decisions is therefore a function of the seed and the order of requests.
Latency in real runs comes from the chaos proxy; `/control` (error, slow, hang) exists for
tests that do not use it. The bidder never sleeps except for the configured service time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["MODES", "Bidder", "BidderSettings", "InvalidBidRequest", "main", "serve"]

MODES = ("ok", "error", "slow", "hang")
MAX_DELAY_MS = 600_000
_JSON = "application/json"


class InvalidBidRequest(ValueError):
    """A bid request that does not fit the OpenRTB subset; the message names the field."""


@dataclass(frozen=True)
class BidderSettings:
    """What every bidder in a process shares; validated on construction."""

    bid_probability: float = 0.7
    service_time_ms: float = 1.0
    price_scale: float = 1.0  # median markup over the floor (CPM)
    price_sigma: float = 0.5  # lognormal shape of the markup

    def __post_init__(self) -> None:
        if not 0.0 <= self.bid_probability <= 1.0:
            raise ValueError(f"bid_probability must be in [0, 1], got {self.bid_probability}")
        if not 0.0 <= self.service_time_ms <= 10_000:
            raise ValueError(f"service_time_ms must be in [0, 10000], got {self.service_time_ms}")
        if not self.price_scale > 0:
            raise ValueError(f"price_scale must be > 0, got {self.price_scale}")
        if not 0.0 <= self.price_sigma <= 5.0:
            raise ValueError(f"price_sigma must be in [0, 5], got {self.price_sigma}")


def _parse_imps(body: Any) -> tuple[str, list[tuple[str, float]]]:
    if not isinstance(body, dict):
        raise InvalidBidRequest("body must be a JSON object")
    req_id = body.get("id")
    if not isinstance(req_id, str) or not req_id:
        raise InvalidBidRequest("field 'id' must be a non-empty string")
    imps = body.get("imp")
    if not isinstance(imps, list) or not imps:
        raise InvalidBidRequest("field 'imp' must be a non-empty list")
    out: list[tuple[str, float]] = []
    for i, imp in enumerate(imps):
        if not isinstance(imp, dict):
            raise InvalidBidRequest(f"field 'imp[{i}]' must be an object")
        imp_id = imp.get("id")
        if not isinstance(imp_id, str) or not imp_id:
            raise InvalidBidRequest(f"field 'imp[{i}].id' must be a non-empty string")
        floor = imp.get("bidfloor", 0.0)
        if isinstance(floor, bool) or not isinstance(floor, int | float):
            raise InvalidBidRequest(f"field 'imp[{i}].bidfloor' must be a number >= 0")
        if not (math.isfinite(floor) and floor >= 0):
            raise InvalidBidRequest(f"field 'imp[{i}].bidfloor' must be a number >= 0")
        out.append((imp_id, float(floor)))
    tmax = body.get("tmax")
    if tmax is not None and (isinstance(tmax, bool) or not isinstance(tmax, int) or tmax < 0):
        raise InvalidBidRequest("field 'tmax' must be an integer >= 0 (milliseconds)")
    return req_id, out


@dataclass
class Bidder:
    """One simulated partner: a name, a seeded RNG, a mode and counters."""

    name: str
    rng: random.Random
    settings: BidderSettings = field(default_factory=BidderSettings)
    mode: str = "ok"
    delay_ms: int = 0
    counters: dict[str, int] = field(
        default_factory=lambda: {"requests": 0, "bids": 0, "no_bids": 0, "errors": 0, "invalid": 0}
    )
    _serial: int = 0
    _release: asyncio.Event | None = None

    @classmethod
    def seeded(cls, index: int, seed: int, settings: BidderSettings | None = None) -> Bidder:
        """Bidder `dsp-<index+1>` with an RNG derived from (seed, index)."""
        return cls(
            name=f"dsp-{index + 1}",
            rng=random.Random(f"spikegate-dsp:{seed}:{index}"),
            settings=settings or BidderSettings(),
        )

    def decide(self, body: Any) -> dict[str, Any] | None:
        """The bid response for `body`, or None for no bid. Raises InvalidBidRequest."""
        req_id, imps = _parse_imps(body)
        if self.rng.random() >= self.settings.bid_probability:
            return None
        mu = math.log(self.settings.price_scale)
        bids = []
        for imp_id, floor in imps:
            self._serial += 1
            markup = self.rng.lognormvariate(mu, self.settings.price_sigma)
            price = round(floor + markup, 4)
            bid_id = f"{self.name}-{self._serial}"
            bids.append(
                {"id": bid_id, "impid": imp_id, "price": price, "adm": f"<ad id='{bid_id}'/>"}
            )
        return {"id": req_id, "seatbid": [{"seat": self.name, "bid": bids}]}

    def set_mode(self, mode: str, delay_ms: int) -> None:
        """Switch mode; requests held by "hang" are released when the mode changes."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0 <= delay_ms <= MAX_DELAY_MS:
            raise ValueError(f"delay_ms must be in [0, {MAX_DELAY_MS}], got {delay_ms}")
        if self._release is not None and mode != "hang":
            self._release.set()
            self._release = None
        self.mode = mode
        self.delay_ms = delay_ms

    def release_all(self) -> None:
        """Let every hung request finish (used at shutdown)."""
        if self._release is not None:
            self._release.set()
            self._release = None

    # -- HTTP -------------------------------------------------------------------------

    async def handle_bid(self, request: web.Request) -> web.StreamResponse:
        self.counters["requests"] += 1
        mode = self.mode
        if mode == "hang":
            if self._release is None:
                self._release = asyncio.Event()
            await self._release.wait()
            mode = self.mode if self.mode != "hang" else "ok"
        if mode in ("slow", "error") and self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        if mode == "error":
            self.counters["errors"] += 1
            return _json_response({"error": "simulated DSP failure", "dsp": self.name}, 503)
        try:
            body = json.loads(await request.read())
        except ValueError:
            self.counters["invalid"] += 1
            return _json_response({"error": "body must be valid JSON"}, 400)
        try:
            answer = self.decide(body)
        except InvalidBidRequest as exc:
            self.counters["invalid"] += 1
            return _json_response({"error": str(exc)}, 400)
        if self.settings.service_time_ms > 0:
            await asyncio.sleep(self.settings.service_time_ms / 1000)
        if answer is None:
            self.counters["no_bids"] += 1
            return web.Response(status=204, headers={"X-Spikegate-Dsp": self.name})
        self.counters["bids"] += 1
        return _json_response(answer, 200, self.name)

    async def handle_healthz(self, _request: web.Request) -> web.StreamResponse:
        return _json_response({"status": "ok", "dsp": self.name}, 200, self.name)

    async def handle_stats(self, _request: web.Request) -> web.StreamResponse:
        return _json_response({"dsp": self.name, **self.counters}, 200, self.name)

    async def handle_control_get(self, _request: web.Request) -> web.StreamResponse:
        return _json_response({"mode": self.mode, "delay_ms": self.delay_ms}, 200, self.name)

    async def handle_control(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _json_response({"error": "body must be valid JSON"}, 400)
        if not isinstance(body, dict):
            return _json_response({"error": "body must be a JSON object"}, 400)
        mode = body.get("mode")
        delay = body.get("delay_ms", 0)
        if not isinstance(mode, str) or mode not in MODES:
            return _json_response({"error": f"field 'mode' must be one of {list(MODES)}"}, 400)
        if isinstance(delay, bool) or not isinstance(delay, int):
            return _json_response({"error": "field 'delay_ms' must be an integer"}, 400)
        try:
            self.set_mode(mode, delay)
        except ValueError as exc:
            return _json_response({"error": f"field {exc}"}, 400)
        return _json_response({"mode": self.mode, "delay_ms": self.delay_ms}, 200, self.name)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/bid", self.handle_bid)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/stats", self.handle_stats)
        app.router.add_get("/control", self.handle_control_get)
        app.router.add_post("/control", self.handle_control)
        return app


def _json_response(payload: Any, status: int, dsp: str | None = None) -> web.Response:
    headers = {"X-Spikegate-Dsp": dsp} if dsp else None
    return web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=status,
        content_type=_JSON,
        headers=headers,
    )


async def serve(
    ports: Sequence[int],
    *,
    seed: int = 0,
    settings: BidderSettings | None = None,
    host: str = "127.0.0.1",
    stop: asyncio.Event | None = None,
) -> None:
    """Serve one bidder per port until `stop` is set (or SIGTERM/SIGINT when stop is None)."""
    settings = settings or BidderSettings()
    bidders = [Bidder.seeded(i, seed, settings) for i in range(len(ports))]
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []
    try:
        for bidder, port in zip(bidders, ports, strict=True):
            runner = web.AppRunner(bidder.app(), access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port, shutdown_timeout=1.0).start()
        listing = " ".join(
            f"{b.name}=http://{host}:{p}" for b, p in zip(bidders, ports, strict=True)
        )
        print(f"dsp ready: {listing} seed={seed}", flush=True)
        await stop.wait()
    finally:
        for bidder in bidders:
            bidder.release_all()
        for runner in runners:
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m spikegate.target.dsp", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--port",
        type=int,
        action="append",
        required=True,
        help="port of one bidder (repeat for more: dsp-1, dsp-2, ... in this order)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bid-probability", type=float, default=0.7)
    p.add_argument("--service-time-ms", type=float, default=1.0)
    p.add_argument("--price-scale", type=float, default=1.0)
    p.add_argument("--price-sigma", type=float, default=0.5)
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    for port in args.port:
        if not 1 <= port <= 65535:
            parser.error(f"--port must be in [1, 65535], got {port}")
    if len(set(args.port)) != len(args.port):
        parser.error("--port values must be distinct")
    try:
        settings = BidderSettings(
            bid_probability=args.bid_probability,
            service_time_ms=args.service_time_ms,
            price_scale=args.price_scale,
            price_sigma=args.price_sigma,
        )
    except ValueError as exc:
        parser.error("--" + str(exc).replace("_", "-", 2))
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(args.port, seed=args.seed, settings=settings, host=args.host))
    except OSError as exc:
        print(f"dsp: cannot serve: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
