"""Prometheus text exposition of the proxies' byte counters (upstream's metric names), of
their outstanding requests (see outstanding.py) and of their client connections (accepted,
open now); the last two are ours: a real toxiproxy-server has neither."""

from __future__ import annotations

from collections.abc import Iterable

from .proxy import Proxy

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTSTANDING = "spikegate_proxy_outstanding"
OUTSTANDING_REACHED = "spikegate_proxy_outstanding_reached_total"
# Two names, not `x_total` beside a gauge `x`: a parser would take both for one family.
CONNECTIONS_ACCEPTED = "spikegate_proxy_connections_accepted_total"
CONNECTIONS_OPEN = "spikegate_proxy_connections_open"
RECEIVED_BYTES = "toxiproxy_proxy_received_bytes_total"
SENT_BYTES = "toxiproxy_proxy_sent_bytes_total"
_METRICS = (
    (RECEIVED_BYTES, "received", "Bytes read from the source socket."),
    (SENT_BYTES, "sent", "Bytes written to the destination socket."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(proxies: Iterable[Proxy]) -> bytes:
    proxies = list(proxies)
    lines: list[str] = []
    for metric, attribute, help_text in _METRICS:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} counter")
        for proxy in proxies:
            for direction, counters in proxy.counters.items():
                labels = (
                    f'direction="{direction}",listener="{_label(proxy.listen)}",'
                    f'proxy="{_label(proxy.name)}",upstream="{_label(proxy.upstream)}"'
                )
                lines.append(f"{metric}{{{labels}}} {getattr(counters, attribute)}")
    lines.append(
        f"# HELP {OUTSTANDING} Connections of the proxy whose client waits for an answer: it "
        "sent bytes, and none were written back since."
    )
    lines.append(f"# TYPE {OUTSTANDING} gauge")
    for proxy in proxies:
        lines.append(f'{OUTSTANDING}{{proxy="{_label(proxy.name)}"}} {proxy.outstanding.count}')
    lines.append(
        f"# HELP {OUTSTANDING_REACHED} Times the proxy's outstanding count rose to `level`; "
        "a scraper's peak since its previous scrape is the highest level whose count rose, "
        "or the gauge then, or now."
    )
    lines.append(f"# TYPE {OUTSTANDING_REACHED} counter")
    for proxy in proxies:
        name = _label(proxy.name)
        for level, count in proxy.outstanding.levels():
            lines.append(f'{OUTSTANDING_REACHED}{{level="{level}",proxy="{name}"}} {count}')
    lines.append(
        f"# HELP {CONNECTIONS_ACCEPTED} Client connections the proxy accepted since it was created."
    )
    lines.append(f"# TYPE {CONNECTIONS_ACCEPTED} counter")
    for proxy in proxies:
        lines.append(f'{CONNECTIONS_ACCEPTED}{{proxy="{_label(proxy.name)}"}} {proxy.accepted}')
    lines.append(f"# HELP {CONNECTIONS_OPEN} Client connections of the proxy open now.")
    lines.append(f"# TYPE {CONNECTIONS_OPEN} gauge")
    for proxy in proxies:
        lines.append(f'{CONNECTIONS_OPEN}{{proxy="{_label(proxy.name)}"}} {len(proxy.connections)}')
    return ("\n".join(lines) + "\n").encode()
