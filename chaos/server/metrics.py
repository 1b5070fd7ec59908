"""Prometheus text exposition of the proxies' byte counters (upstream's metric names)."""

from __future__ import annotations

from collections.abc import Iterable

from .proxy import Proxy

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_METRICS = (
    ("toxiproxy_proxy_received_bytes_total", "received", "Bytes read from the source socket."),
    ("toxiproxy_proxy_sent_bytes_total", "sent", "Bytes written to the destination socket."),
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
    return ("\n".join(lines) + "\n").encode()
