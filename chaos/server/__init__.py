"""The embedded Toxiproxy-compatible chaos server (``python -m spikegate.chaos.server``).

Speaks Shopify/toxiproxy 2.12.0's HTTP API and applies its toxics, in pure asyncio (uvloop
when installed). Modules: ``api`` (routes, handlers), ``httpd`` (HTTP/1.1), ``gojson`` (Go's
JSON decoding rules), ``schema`` (request/response shapes), ``proxy`` (listeners and the
collection), ``connection`` and ``link`` (the data path), ``outstanding`` (requests waiting
for an answer, per proxy), ``toxics/`` (one module each), ``metrics`` (Prometheus text).

Divergences from upstream Toxiproxy
-----------------------------------
- A proxy created without ``listen`` binds ``127.0.0.1:0`` (upstream binds every interface,
  reported as ``[::]:P``): Spikegate binds loopback unless told otherwise.
- Out-of-range toxic attributes get 400 naming the attribute and its range: negative values,
  durations above 2^31-1 ms/us, slicer ``average_size`` 0 or ``size_variation`` >=
  ``average_size`` (upstream hangs or crashes on several of these). ``toxicity`` outside
  [0, 1] gets 400 too. ``bandwidth`` rate 0 is allowed and holds all data (a freeze).
- An ``upstream`` that is not ``host:port`` with a port in 1-65535 gets 400 at create/update
  (upstream accepts it and fails every connection).
- Updating or removing toxics never blocks the API and never drops or reorders data; a toxic
  removed while holding a chunk releases it at once. Toxicity is rolled once per connection
  and direction (and again when ``toxicity`` changes), not on every chain change.
- A ``reset_peer`` toxic resets (RST) only connections it was rolled active on; at toxicity 0
  ordinary closes stay ordinary FINs. When it fires, both peers get the RST.
- EOF is forwarded as a half-close (the other direction keeps flowing until it ends too);
  upstream closes the whole connection on the first EOF.
- ``/populate`` answers with the existing proxy (toxics included) when an identical one is
  kept; upstream echoes a fresh, toxic-less copy. ``listen`` matches either the address asked
  for or the bound one, so re-populating a ``127.0.0.1:0`` proxy keeps it.
- Timers run on the event loop (1 ms resolution under uvloop); slicer ``delay`` below 1 ms
  is rounded up to the loop's granularity.
- Request bodies above 1 MiB get 413; ``/metrics`` always serves the per-proxy byte
  counters (upstream needs ``-proxy-metrics``), and also our own per-proxy outstanding
  requests (``spikegate_proxy_outstanding`` and ``..._reached_total{level}``).
"""

from __future__ import annotations

import sys

from .app import ChaosServer, load_config
from .errors import ApiError, ChaosServerError, ConfigError
from .schema import ProxySpec

__all__ = [
    "ApiError",
    "ChaosServer",
    "ChaosServerError",
    "ConfigError",
    "ProxySpec",
    "load_config",
    "server_command",
]


def server_command(port: int | str, *args: str) -> list[str]:
    """The command line that serves the API on 127.0.0.1:`port` (0: any free port)."""
    return [sys.executable, "-m", __name__, "--host", "127.0.0.1", "--port", str(port), *args]
