"""What the chaos proxies saw of each dependency, read from the chaos server's /metrics.

    Sampler tick ──> ProxyCounters() ──GET {chaos_url}/metrics (once)──> chaos server
                          │  spikegate_proxy_outstanding{proxy}                     (gauge)
                          │  spikegate_proxy_outstanding_reached_total{proxy,level} (counters)
                          │  toxiproxy_proxy_{received,sent}_bytes_total{proxy,direction}
                          │  spikegate_proxy_connections_accepted_total{proxy}      (counter)
                          │  spikegate_proxy_connections_open{proxy}                (gauge)
                          v
       {"proxy_outstanding_max": {"redis": 12},
        "proxy_bytes": {"redis": {"received": 5120, "sent": 840}},
        "proxy_connections": {"redis": {"accepted": 2, "open": 9}}}

Independent evidence of what the service really did towards Redis, Kafka, each DSP or each
declared dependency: the proxy sits on the wire, so the service cannot misreport it.

- `proxy_outstanding_max`: the peak of connections with a request outstanding (the client
  sent bytes, none were written back yet: chaos/server/outstanding.py) since the previous
  call, from the monotonic `reached` counters (the level then, every level whose count rose,
  the level now), so a late or failed call and other scrapers take nothing from it. On the
  first call the peak is the current level.
- `proxy_bytes`: bytes since the previous good call, at the proxy's service-facing socket:
  `received` read from the service (its requests: received{direction="upstream"}), `sent`
  written back to it (the dependency's answers that reached it: sent{direction="downstream"},
  so an answer a toxic holds or drops is not counted).
- `proxy_connections`: `accepted` client connections since the previous good call, `open`
  the connections open now.

A counter seen for the first time (the first call, a proxy created since) counts from zero,
so the first call carries what happened since the proxy was created. Any of a proxy's
counters (bytes, accepted, outstanding `reached`) that went backwards means a restarted chaos
server or a re-created proxy: all of that proxy's counters start over from zero. A real
toxiproxy-server exports bytes only (with -proxy-metrics; without, /metrics is 404 and
every call gives {} after one fetch), so its rows have `proxy_bytes` alone.

`ProxyOutstanding` is the outstanding peaks alone (it stops asking a server without them).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from spikegate.chaos.server.metrics import (
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_OPEN,
    OUTSTANDING,
    OUTSTANDING_REACHED,
    RECEIVED_BYTES,
    SENT_BYTES,
)
from spikegate.harness.sampler import Fetch, scrape

__all__ = [
    "BYTES_FIELD",
    "CONNECTIONS_FIELD",
    "FIELD",
    "ProxyCounters",
    "ProxyOutstanding",
    "ProxyReadings",
    "counter_deltas",
    "parse_outstanding",
    "parse_proxy_metrics",
]

FIELD = "proxy_outstanding_max"
BYTES_FIELD = "proxy_bytes"
CONNECTIONS_FIELD = "proxy_connections"
# (level, reached counts by level) of one proxy, as last seen
_Reading = tuple[float, dict[int, float]]
# which (metric, direction) sample is which byte count, at the service-facing socket
_BYTES = {(RECEIVED_BYTES, "upstream"): "received", (SENT_BYTES, "downstream"): "sent"}
# by family name: a counter's family drops its _total (it keeps it when the TYPE is missing)
_FAMILIES = {
    OUTSTANDING: "outstanding",
    CONNECTIONS_OPEN: "connections",
    **{
        name.removesuffix(suffix): kind
        for name, kind in (
            (OUTSTANDING_REACHED, "outstanding"),
            (RECEIVED_BYTES, "bytes"),
            (SENT_BYTES, "bytes"),
            (CONNECTIONS_ACCEPTED, "connections"),
        )
        for suffix in ("_total", "")
    },
}


@dataclass(frozen=True, slots=True)
class ProxyReadings:
    """One /metrics of the chaos server, per proxy; None where a kind is not exported."""

    outstanding: dict[str, _Reading] | None = None  # (outstanding now, reached by level)
    bytes: dict[str, dict[str, float]] | None = None  # {"received": n, "sent": n} cumulative
    connections: dict[str, dict[str, float]] | None = None  # {"accepted": n, "open": n}


def parse_proxy_metrics(text: str) -> ProxyReadings:
    """Every proxy's counters in a chaos server's exposition (ours or a real toxiproxy's).

    Raises ValueError when the text is not a Prometheus exposition.
    """
    found: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        kind = _FAMILIES.get(family.name)
        if kind is None:
            continue
        per_proxy = found.setdefault(kind, {})  # exported before any proxy: present, empty
        for sample in family.samples:
            proxy = sample.labels.get("proxy")
            if proxy is None:
                continue
            value = float(sample.value)
            if kind == "outstanding":
                _, counts = per_proxy.setdefault(proxy, (0.0, {}))
                if sample.name == OUTSTANDING:
                    per_proxy[proxy] = (value, counts)
                elif sample.name == OUTSTANDING_REACHED and "level" in sample.labels:
                    try:
                        counts[int(sample.labels["level"])] = value
                    except ValueError:
                        continue
            elif kind == "bytes":
                key = _BYTES.get((sample.name, sample.labels.get("direction", "")))
                if key is not None:
                    counts = per_proxy.setdefault(proxy, {"received": 0.0, "sent": 0.0})
                    counts[key] += value  # summed over listener/upstream label sets
            elif sample.name in (CONNECTIONS_ACCEPTED, CONNECTIONS_OPEN):
                key = "accepted" if sample.name == CONNECTIONS_ACCEPTED else "open"
                per_proxy.setdefault(proxy, {"accepted": 0.0, "open": 0.0})[key] = value
    return ProxyReadings(found.get("outstanding"), found.get("bytes"), found.get("connections"))


def parse_outstanding(text: str) -> dict[str, _Reading] | None:
    """Per proxy: (outstanding now, reached counts by level); None when not exported.

    Raises ValueError when the text is not a Prometheus exposition.
    """
    return parse_proxy_metrics(text).outstanding


def _went_back(now: Mapping[Any, float], then: Mapping[Any, float]) -> bool:
    """Some counter of `then` is lower now, or gone: the counters restarted."""
    return any(now.get(key, -1.0) < value for key, value in then.items())


def _peak(now: _Reading, before: _Reading) -> float:
    """The peak between the `before` reading and `now` (see the module docstring)."""
    level_now, counts_now = now
    level_then, counts_then = before
    if _went_back(counts_now, counts_then):
        level_then, counts_then = 0.0, {}  # the counters restarted: count from zero
    rose = (float(level) for level, n in counts_now.items() if n > counts_then.get(level, 0.0))
    return max(level_then, level_now, *rose)


def counter_deltas(now: Mapping[str, float], before: Mapping[str, float] | None) -> dict[str, int]:
    """What each of one proxy's counters gained since `before` (None: never seen, so from
    zero); if any went backwards or vanished the proxy restarted and every one counts from
    zero."""
    then = before or {}
    if _went_back(now, then):
        then = {}
    return {key: int(value - then.get(key, 0.0)) for key, value in now.items()}


class _ChaosMetrics:
    """One GET of the chaos server's /metrics per call, errors as OSError naming the URL."""

    def __init__(self, chaos_url: str, *, fetch: Fetch | None = None, timeout_s: float = 0.3):
        parts = urlsplit(chaos_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"chaos url must look like http://HOST:PORT (got {chaos_url!r})")
        self.metrics_url = chaos_url.rstrip("/") + "/metrics"
        self._fetch: Fetch = fetch or functools.partial(scrape, timeout_s=timeout_s)
        self.exported: bool | None = None  # None until known; False: nothing to read there

    def _read(self) -> ProxyReadings | None:
        """The readings, or None when the server has no /metrics (a real toxiproxy-server
        without -proxy-metrics)."""
        try:
            status, body = self._fetch(self.metrics_url)
        except OSError as exc:
            raise OSError(f"chaos proxy metrics {self.metrics_url}: {exc}") from exc
        if status == 404:
            return None
        if status != 200:
            raise OSError(f"chaos proxy metrics {self.metrics_url}: HTTP {status}")
        try:
            return parse_proxy_metrics(body)
        except ValueError as exc:
            raise OSError(
                f"chaos proxy metrics {self.metrics_url}: not a Prometheus exposition: {exc}"
            ) from exc


class _Peaks:
    """The outstanding peak per proxy since the previous reading it was given."""

    def __init__(self) -> None:
        self._before: dict[str, _Reading] | None = None  # None until the first good read

    def went_back(self, readings: dict[str, _Reading]) -> set[str]:
        before = self._before or {}
        return {p for p, (_, n) in readings.items() if p in before and _went_back(n, before[p][1])}

    def __call__(
        self, readings: dict[str, _Reading], restarted: AbstractSet[str] = frozenset()
    ) -> dict[str, int]:
        before = self._before
        peaks: dict[str, int] = {}
        for proxy, now in sorted(readings.items()):
            if before is None:
                peaks[proxy] = int(now[0])  # first call: nothing to difference against
            else:  # a proxy new (or restarted) since the previous call: all its levels
                then = (0.0, {}) if proxy in restarted else before.get(proxy, (0.0, {}))
                peaks[proxy] = int(_peak(now, then))
        self._before = readings
        return peaks


class _Deltas:
    """Per proxy, what its cumulative counters gained since the previous reading given."""

    def __init__(self, gauges: tuple[str, ...] = ()) -> None:
        self._gauges = gauges  # passed through as they are, never differenced
        self._before: dict[str, dict[str, float]] = {}

    def _counters(self, values: Mapping[str, float]) -> dict[str, float]:
        return {k: v for k, v in values.items() if k not in self._gauges}

    def went_back(self, readings: dict[str, dict[str, float]]) -> set[str]:
        before = self._before
        return {
            p
            for p, values in readings.items()
            if p in before and _went_back(self._counters(values), before[p])
        }

    def __call__(
        self, readings: dict[str, dict[str, float]], restarted: AbstractSet[str] = frozenset()
    ) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for proxy, values in sorted(readings.items()):
            counters = self._counters(values)
            then = None if proxy in restarted else self._before.get(proxy)
            row = counter_deltas(counters, then)
            row.update({k: int(v) for k, v in values.items() if k in self._gauges})
            out[proxy] = row
            self._before[proxy] = counters
        return out


class ProxyCounters(_ChaosMetrics):
    """Evidence source for `Sampler(..., evidence=[ProxyCounters(chaos_url)])`: every proxy's
    outstanding peak, bytes and connections from one GET per call (the module docstring)."""

    def __init__(self, chaos_url: str, *, fetch: Fetch | None = None, timeout_s: float = 0.3):
        super().__init__(chaos_url, fetch=fetch, timeout_s=timeout_s)
        self._peaks = _Peaks()
        self._bytes = _Deltas()
        self._connections = _Deltas(gauges=("open",))

    def __call__(self) -> dict[str, Any]:
        if self.exported is False:
            return {}
        readings = self._read()
        if readings is None:
            self.exported = False
            return {}
        self.exported = True
        # a proxy any of whose counters went backwards was re-created: all of them start over
        restarted = set[str]().union(
            self._peaks.went_back(readings.outstanding or {}),
            self._bytes.went_back(readings.bytes or {}),
            self._connections.went_back(readings.connections or {}),
        )
        fields: dict[str, Any] = {}
        if readings.outstanding is not None:
            fields[FIELD] = self._peaks(readings.outstanding, restarted)
        if readings.bytes is not None:
            fields[BYTES_FIELD] = self._bytes(readings.bytes, restarted)
        if readings.connections is not None:
            fields[CONNECTIONS_FIELD] = self._connections(readings.connections, restarted)
        return fields


class ProxyOutstanding(_ChaosMetrics):
    """Evidence source for `Sampler(..., evidence=[ProxyOutstanding(url)])`: the outstanding
    peaks alone; a server that does not export them gives {} on every call after one fetch."""

    def __init__(self, chaos_url: str, *, fetch: Fetch | None = None, timeout_s: float = 0.3):
        super().__init__(chaos_url, fetch=fetch, timeout_s=timeout_s)
        self._peaks = _Peaks()

    def __call__(self) -> dict[str, Any]:
        if self.exported is False:
            return {}
        readings = self._read()
        if readings is None or readings.outstanding is None:
            self.exported = False
            return {}
        self.exported = True
        return {FIELD: self._peaks(readings.outstanding)}
