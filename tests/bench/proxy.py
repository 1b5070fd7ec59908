"""Benchmark: the embedded chaos proxy against a direct connection, side by side in one run.

Run: ``.venv/bin/python tests/bench/proxy.py [--quick] [--toxiproxy-url URL] [--strict]``
(not a pytest test). Prints one JSON document on stdout; progress goes to stderr.

    bench ──direct──────────────────────────> echo/source server (subprocess)
    bench ──> chaos server proxy "echo" ────> echo/source server
    redis-benchmark ──direct / via "redis"──> redis-server (subprocess)

Measured, each pair interleaved so machine load hits both sides alike:
  1. round-trip latency of a 64 B echo, no toxics (median of per-repeat medians)
  2. single-stream throughput server -> client (MB/s, MB = 10**6 B)
  3. redis-benchmark SET/GET ops/s: direct and proxied runs alternate (and swap order each
     repeat); the ratio is the median of the per-pair ratios, so load from other processes
     that drifts over the run hits both sides of a pair alike. CPU seconds per operation of
     redis-benchmark, redis-server and the embedded proxy are recorded too: on a CPU-bound
     machine direct/proxied CPU per op is the ratio the proxied run can reach at best.
  4. latency toxic accuracy at 10, 100 and 1000 ms (added round trip minus the toxic)
and compared with the bar in TOXIPROXY_API.md. Everything started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import resource
import shutil
import signal
import socket
import socketserver
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from spikegate.chaos.client import ChaosClient  # noqa: E402
from spikegate.chaos.errors import ChaosUnavailable  # noqa: E402
from spikegate.chaos.server import server_command  # noqa: E402

ECHO, SOURCE = b"E", b"S"
PAYLOAD = b"x" * 64
_CHUNK = bytes(1 << 20)


# -- the echo/source server (runs in its own process: `proxy.py --serve`) ----------------------


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = sock.recv(1)
        if mode == ECHO:
            while data := sock.recv(65536):
                sock.sendall(data)
        elif mode == SOURCE:
            (remaining,) = struct.unpack("!Q", _recv_exact(sock, 8))
            view = memoryview(_CHUNK)
            while remaining > 0:
                n = min(remaining, len(_CHUNK))
                sock.sendall(view[:n])
                remaining -= n
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
                sock.recv(1)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def serve() -> None:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


# -- helpers -----------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout_s} s")


class Children:
    """Every process this bench starts; all stopped on exit, whatever the exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        logf = (self.log_dir / f"{name}.log").open("ab")
        kw.setdefault("stdout", logf)
        proc = subprocess.Popen(argv, stderr=logf, cwd=REPO, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-1500:] if path.exists() else ""


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def pair(direct: float, proxied: float, **extra: Any) -> dict[str, Any]:
    return {
        "direct": round(direct, 3),
        "proxied": round(proxied, 3),
        "ratio_proxied_to_direct": round(proxied / direct, 4) if direct else None,
        **extra,
    }


# -- measurements ------------------------------------------------------------------------------


def connect(address: str, mode: bytes) -> socket.socket:
    sock = socket.create_connection(split(address), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Let the proxy's upstream dial complete, so no timed section includes it.
    time.sleep(0.1)
    sock.sendall(mode)
    return sock


def rtts_us(sock: socket.socket, rounds: int) -> list[float]:
    out: list[float] = []
    n = len(PAYLOAD)
    for _ in range(rounds):
        started = time.perf_counter_ns()
        sock.sendall(PAYLOAD)
        got = 0
        while got < n:
            chunk = sock.recv(n - got)
            if not chunk:
                raise ConnectionError("echo connection closed")
            got += len(chunk)
        out.append((time.perf_counter_ns() - started) / 1000)
    return out


def bench_latency(direct: str, proxied: str, repeats: int, rounds: int) -> dict[str, Any]:
    per_repeat: dict[str, list[float]] = {"direct": [], "proxied": []}
    socks = {"direct": connect(direct, ECHO), "proxied": connect(proxied, ECHO)}
    try:
        for sock in socks.values():
            rtts_us(sock, 200)  # warm up both paths
        for _ in range(repeats):
            for side, sock in socks.items():
                per_repeat[side].append(median(rtts_us(sock, rounds)))
    finally:
        for sock in socks.values():
            sock.close()
    d, p = median(per_repeat["direct"]), median(per_repeat["proxied"])
    return pair(
        d,
        p,
        unit="us round trip (median of per-repeat medians)",
        added_us_per_direction=round((p - d) / 2, 1),
        repeats={k: [round(v, 1) for v in vs] for k, vs in per_repeat.items()},
        round_trips_per_repeat=rounds,
    )


def transfer_mb_s(address: str, nbytes: int) -> float:
    sock = connect(address, b"")
    buf = bytearray(1 << 20)
    try:
        started = time.perf_counter()
        sock.sendall(SOURCE + struct.pack("!Q", nbytes))
        got = 0
        while got < nbytes:
            n = sock.recv_into(buf)
            if n == 0:
                raise ConnectionError(f"source closed after {got} of {nbytes} bytes")
            got += n
        return nbytes / (time.perf_counter() - started) / 1e6
    finally:
        sock.close()


def bench_throughput(direct: str, proxied: str, repeats: int, nbytes: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"direct": [], "proxied": []}
    transfer_mb_s(proxied, nbytes // 8)  # warm up
    for _ in range(repeats):
        runs["direct"].append(transfer_mb_s(direct, nbytes))
        runs["proxied"].append(transfer_mb_s(proxied, nbytes))
    return pair(
        median(runs["direct"]),
        median(runs["proxied"]),
        unit="MB/s, one stream, server -> client",
        bytes_per_transfer=nbytes,
        repeats={k: [round(v, 1) for v in vs] for k, vs in runs.items()},
    )


def cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc), None when unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_benchmark(port: int, requests: int, clients: int) -> tuple[dict[str, float], float]:
    """ops/s per test, and the CPU seconds redis-benchmark itself used."""
    before = children_cpu_s()  # the only child reaped in between is redis-benchmark
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
         "-n", str(requests), "-c", str(clients), "-q", "--csv"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = csv.DictReader(io.StringIO(out.stdout))
    return {row["test"].lower(): float(row["rps"]) for row in rows}, children_cpu_s() - before


def bench_redis(
    children: Children,
    chaos: ChaosClient,
    chaos_pid: int | None,
    repeats: int,
    requests: int,
    clients: int,
) -> dict[str, Any]:
    port = free_port()
    redis_proc = children.start(
        "redis-server",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
    )  # fmt: skip

    def pong() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for(pong, 10, "redis-server")
    proxy = chaos.create_proxy("bench-redis", f"127.0.0.1:{port}")
    try:
        runs: dict[str, dict[str, list[float]]] = {
            "direct": {"set": [], "get": []},
            "proxied": {"set": [], "get": []},
        }
        # CPU seconds per operation, per process, per side (None: not measurable here)
        cpu: dict[str, dict[str, list[float]]] = {
            side: {"redis_benchmark": [], "redis_server": [], "proxy": []}
            for side in ("direct", "proxied")
        }
        ops = 2 * requests  # set + get
        order = [("direct", port), ("proxied", proxy.port)]
        for _ in range(repeats):
            for side, p in order:
                server0, proxy0 = cpu_s(redis_proc.pid), cpu_s(chaos_pid)
                rps, bench_cpu = redis_benchmark(p, requests, clients)
                server1, proxy1 = cpu_s(redis_proc.pid), cpu_s(chaos_pid)
                for test, value in rps.items():
                    runs[side][test].append(value)
                cpu[side]["redis_benchmark"].append(bench_cpu / ops)
                if server0 is not None and server1 is not None:
                    cpu[side]["redis_server"].append((server1 - server0) / ops)
                if side == "proxied" and proxy0 is not None and proxy1 is not None:
                    cpu[side]["proxy"].append((proxy1 - proxy0) / ops)
            order.reverse()  # alternate who goes first, so drift does not favour one side
        result: dict[str, Any] = {}
        for test in ("set", "get"):
            pairs = [
                p / d for d, p in zip(runs["direct"][test], runs["proxied"][test], strict=True)
            ]
            result[test] = pair(
                median(runs["direct"][test]),
                median(runs["proxied"][test]),
                median_pair_ratio=round(median(pairs), 4),
                repeats={side: runs[side][test] for side in runs},
            )
        ratios = [result[t]["median_pair_ratio"] for t in ("set", "get")]
        result["unit"] = f"ops/s, redis-benchmark -n {requests} -c {clients} (set and get)"
        result["min_ratio"] = min(ratios)
        result["cpu_us_per_op"] = per_op = {
            side: {name: round(median(v) * 1e6, 2) for name, v in procs.items() if v}
            for side, procs in cpu.items()
        }
        direct_total = sum(per_op["direct"].values())
        proxied_total = sum(per_op["proxied"].values())
        if per_op["proxied"].get("proxy") and proxied_total:
            # On a CPU-saturated machine ops/s ~ cores / CPU per op: the best reachable ratio.
            result["cpu_bound_ceiling_ratio"] = round(direct_total / proxied_total, 4)
        return result
    finally:
        chaos.delete_proxy("bench-redis")


def bench_latency_toxic(
    chaos: ChaosClient, proxied: str, targets_ms: tuple[int, ...], budget_ms: float
) -> dict[str, Any]:
    sock = connect(proxied, ECHO)
    try:
        baseline_ms = median(rtts_us(sock, 200)) / 1000
        out: dict[str, Any] = {"baseline_proxied_rtt_ms": round(baseline_ms, 3)}
        for target in targets_ms:
            rounds = max(3, min(30, int(budget_ms / target)))
            chaos.add_toxic("bench-echo", "latency", name="bench", attributes={"latency": target})
            try:
                measured = median(rtts_us(sock, rounds)) / 1000 - baseline_ms
            finally:
                chaos.remove_toxic("bench-echo", "bench")
            out[f"{target}ms"] = {
                "added_ms": round(measured, 3),
                "error_ms": round(measured - target, 3),
                "round_trips": rounds,
            }
        return out
    finally:
        sock.close()


# -- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def chaos_server(children: Children, url: str | None) -> Iterator[tuple[ChaosClient, int | None]]:
    """A client of the server under test, and its pid when this bench started it."""
    if url is not None:
        client = ChaosClient(url, timeout_s=5.0)
        client.wait_ready(10)
        yield client, None
        return
    for _ in range(3):
        port = free_port()
        proc = children.start(
            "chaos-server",
            server_command(port),
        )
        client = ChaosClient(f"http://127.0.0.1:{port}", timeout_s=5.0)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                client.version()
            except ChaosUnavailable:
                time.sleep(0.05)
                continue
            yield client, proc.pid
            return
        proc.kill()
    raise RuntimeError(f"chaos server did not start: {tail(children.log_dir / 'chaos-server.log')}")


def run(args: argparse.Namespace, children: Children) -> dict[str, Any]:
    started = time.monotonic()
    echo = children.start("echo", [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE)
    assert echo.stdout is not None
    line = echo.stdout.readline().strip()
    if not line:
        raise RuntimeError(f"echo server did not start: {tail(children.log_dir / 'echo.log')}")
    direct = f"127.0.0.1:{int(line)}"

    load_before = os.getloadavg()
    with chaos_server(children, args.toxiproxy_url) as (chaos, chaos_pid):
        version = chaos.version()
        proxy = chaos.create_proxy("bench-echo", direct)
        proxied = proxy.listen
        try:
            quick = args.quick
            log(f"chaos server {chaos.url} (version {version}); echo {direct} via {proxied}")
            log("round-trip latency ...")
            latency = bench_latency(direct, proxied, repeats=5, rounds=500 if quick else 2000)
            log("single-stream throughput ...")
            throughput = bench_throughput(
                direct, proxied, repeats=3, nbytes=(64 if quick else 256) * 1_000_000
            )
            redis: dict[str, Any] | None = None
            if shutil.which("redis-server") and shutil.which("redis-benchmark"):
                log("redis-benchmark ...")
                redis = bench_redis(
                    children,
                    chaos,
                    chaos_pid,
                    repeats=2 if quick else 4,
                    requests=20_000 if quick else 50_000,
                    clients=50,
                )
            else:
                log("redis-server / redis-benchmark not found: skipped")
            log("latency toxic accuracy ...")
            toxic = bench_latency_toxic(
                chaos, proxied, (10, 100, 1000), budget_ms=600 if quick else 1500
            )
        finally:
            with contextlib.suppress(Exception):
                chaos.delete_proxy("bench-echo")

    bar = {
        "added_latency_le_100us_per_direction": latency["added_us_per_direction"] <= 100,
        "throughput_ge_500MB_s": throughput["proxied"] >= 500,
        "redis_ge_60pct_of_direct": None if redis is None else redis["min_ratio"] >= 0.6,
        "latency_toxic_100ms_within_5ms": abs(toxic["100ms"]["error_ms"]) <= 5,
    }
    return {
        "server": {"url": args.toxiproxy_url or "embedded", "version": version},
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1m_before": round(load_before[0], 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        "latency_rtt_us": latency,
        "throughput_MB_s": throughput,
        "redis_benchmark_ops_s": redis,
        "latency_toxic": toxic,
        "bar": bar,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    parser.add_argument("--toxiproxy-url", help="benchmark this server instead of ours")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bar is missed")
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    with tempfile.TemporaryDirectory(prefix="spikegate-bench-") as tmp:
        children = Children(Path(tmp))
        try:
            report = run(args, children)
        finally:
            children.stop_all()
    print(json.dumps(report, indent=2))
    missed = [name for name, ok in report["bar"].items() if ok is False]
    if missed:
        log(f"below the bar: {', '.join(missed)}")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
