"""Outstanding requests per proxied dependency, read from the embedded chaos server.

    Sampler tick ──> ProxyOutstanding() ──GET {chaos_url}/metrics──> chaos server
                          │  spikegate_proxy_outstanding{proxy}                   (gauge)
                          │  spikegate_proxy_outstanding_reached_total{proxy,level} (counters)
                          v
       {"proxy_outstanding_max": {"dsp-1": 4, "kafka": 1, "redis": 12}}

Independent evidence of how many requests the target really had outstanding towards Redis,
Kafka and each DSP: the proxy counts connections whose client sent bytes and has had none
written back (chaos/server/outstanding.py), so the target cannot misreport it. Each call
returns, per proxy, the peak since this object's previous call, derived from the monotonic
`reached` counters (the level then, every level whose count rose, the level now), so a late
or failed call and other scrapers take nothing from it. Counters that went backwards mean a
restarted chaos server (or a re-created proxy): that proxy starts over. On the first call the
peak is the current level. A server that does not export these metrics (a real
toxiproxy-server) gives {} on every call, after one fetch.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from spikegate.chaos.server.metrics import OUTSTANDING, OUTSTANDING_REACHED
from spikegate.harness.sampler import Fetch, scrape

__all__ = ["ProxyOutstanding", "parse_outstanding"]

FIELD = "proxy_outstanding_max"
# (level, reached counts by level) of one proxy, as last seen
_Reading = tuple[float, dict[int, float]]


def parse_outstanding(text: str) -> dict[str, _Reading] | None:
    """Per proxy: (outstanding now, reached counts by level); None when not exported.

    Raises ValueError when the text is not a Prometheus exposition.
    """
    readings: dict[str, _Reading] | None = None
    for family in text_string_to_metric_families(text):
        if family.name not in (OUTSTANDING, OUTSTANDING_REACHED.removesuffix("_total")):
            continue
        if readings is None:
            readings = {}  # exported before any proxy exists: present but empty
        for sample in family.samples:
            proxy = sample.labels.get("proxy")
            if proxy is None:
                continue
            _, counts = readings.setdefault(proxy, (0.0, {}))
            if sample.name == OUTSTANDING:
                readings[proxy] = (float(sample.value), counts)
            elif sample.name == OUTSTANDING_REACHED and "level" in sample.labels:
                try:
                    counts[int(sample.labels["level"])] = float(sample.value)
                except ValueError:
                    continue
    return readings


def _peak(now: _Reading, before: _Reading) -> float:
    """The peak between the `before` reading and `now` (see the module docstring)."""
    level_now, counts_now = now
    level_then, counts_then = before
    if any(n < counts_then.get(level, 0.0) for level, n in counts_now.items()) or any(
        level not in counts_now for level in counts_then
    ):
        level_then, counts_then = 0.0, {}  # the counters restarted: count from zero
    rose = (float(level) for level, n in counts_now.items() if n > counts_then.get(level, 0.0))
    return max(level_then, level_now, *rose)


class ProxyOutstanding:
    """Evidence source for `harness.sampler.Sampler(..., evidence=[ProxyOutstanding(url)])`."""

    def __init__(self, chaos_url: str, *, fetch: Fetch | None = None, timeout_s: float = 0.3):
        parts = urlsplit(chaos_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"chaos url must look like http://HOST:PORT (got {chaos_url!r})")
        self.metrics_url = chaos_url.rstrip("/") + "/metrics"
        self._fetch: Fetch = fetch or functools.partial(scrape, timeout_s=timeout_s)
        self._before: dict[str, _Reading] | None = None  # None until the first good read
        self.exported: bool | None = None  # None until known; False: a server without them

    def __call__(self) -> dict[str, Any]:
        if self.exported is False:
            return {}
        try:
            status, body = self._fetch(self.metrics_url)
        except OSError as exc:
            raise OSError(f"chaos proxy metrics {self.metrics_url}: {exc}") from exc
        if status == 404:  # a real toxiproxy-server without -proxy-metrics
            self.exported = False
            return {}
        if status != 200:
            raise OSError(f"chaos proxy metrics {self.metrics_url}: HTTP {status}")
        try:
            readings = parse_outstanding(body)
        except ValueError as exc:
            raise OSError(
                f"chaos proxy metrics {self.metrics_url}: not a Prometheus exposition: {exc}"
            ) from exc
        if readings is None:
            self.exported = False
            return {}
        self.exported = True
        before = self._before
        peaks: dict[str, int] = {}
        for proxy, now in sorted(readings.items()):
            if before is None:
                peaks[proxy] = int(now[0])  # first call: nothing to difference against
            else:  # a proxy new since the previous call reached all its levels since then
                peaks[proxy] = int(_peak(now, before.get(proxy, (0.0, {}))))
        self._before = readings
        return {FIELD: peaks}
