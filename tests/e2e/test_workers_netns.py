"""Two hosts on one machine: the run (harness, Locust master, a fixed responder standing in
for the service: 200 with a bid, 202 for an impression) in one network namespace, a
`spikegate worker` in another, joined by a veth pair. The worker reaches the master and the
service only over that link, and what it sent arrives by Locust's messaging, second by
second and id by id.

Needs root and `ip netns`; skipped with the reason where they are not allowed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, _env, finish, rows

RESPONDER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    BID = b'{"id":"r1","seatbid":[{"seat":"dsp-1","bid":[{"id":"b1","price":1.5}]}]}'

    class Fixed(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body = (202, b"") if self.path.startswith("/impression") else (200, BID)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Fixed).serve_forever()
    """
)


@dataclass(frozen=True)
class Hosts:
    master_ns: str
    worker_ns: str
    master_ip: str
    worker_ip: str

    def cmd(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    """Two namespaces joined by a veth pair (10.213.N.1 <-> 10.213.N.2), loopback up in each."""
    if shutil.which("ip") is None:
        pytest.skip("two hosts need `ip` (iproute2): not installed")
    if os.geteuid() != 0:
        pytest.skip("two hosts need root for `ip netns` (run as root to include this test)")
    n = os.getpid() % 250 + 1
    h = Hosts(f"sg-m{n}", f"sg-w{n}", f"10.213.{n}.1", f"10.213.{n}.2")
    made: list[str] = []
    try:
        for ns in (h.master_ns, h.worker_ns):
            done = _ip("netns", "add", ns)
            if done.returncode != 0:
                pytest.skip(f"`ip netns add` is not allowed here: {done.stderr.strip()}")
            made.append(ns)
        steps = [
            ("link", "add", f"sgv{n}m", "type", "veth", "peer", "name", f"sgv{n}w"),
            ("link", "set", f"sgv{n}m", "netns", h.master_ns),
            ("link", "set", f"sgv{n}w", "netns", h.worker_ns),
            ("-n", h.master_ns, "addr", "add", f"{h.master_ip}/24", "dev", f"sgv{n}m"),
            ("-n", h.worker_ns, "addr", "add", f"{h.worker_ip}/24", "dev", f"sgv{n}w"),
            ("-n", h.master_ns, "link", "set", f"sgv{n}m", "up"),
            ("-n", h.worker_ns, "link", "set", f"sgv{n}w", "up"),
            ("-n", h.master_ns, "link", "set", "lo", "up"),
            ("-n", h.worker_ns, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"`ip {' '.join(step)}` is not allowed here: {done.stderr.strip()}")
        yield h
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair, and the pair
            _ip("netns", "del", ns)


def _start(argv: list[str], **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,  # type: ignore[call-overload]
    )


@pytest.mark.slow  # ~16 s; make test keeps the loopback workers tests (tests/e2e/test_workers.py)
@pytest.mark.timeout(120)
def test_a_worker_in_another_namespace_sends_its_rows_and_ids_over_the_link(
    tmp_path: Path, hosts: Hosts
) -> None:
    service_port, master_port = 18080, 15557  # inside the run's own namespace: nothing else there
    scenario = tmp_path / "two-hosts.toml"
    scenario.write_text(
        textwrap.dedent(
            f"""
            name = "two-hosts"
            seed = 3

            [target]
            kind = "external"
            url = "http://{hosts.master_ip}:{service_port}"
            allow_remote = true

            [load]
            shape = "steady"
            duration_s = 8
            warmup_s = 2
            base_rps = 40
            publishers = 2
            impression_rate = 0.5
            workers = 1
            workers_wait_s = 20
            master_bind = "{hosts.master_ip}:{master_port}"
            """
        )
    )
    responder = subprocess.Popen(
        hosts.cmd(
            hosts.master_ns,
            [sys.executable, "-c", RESPONDER, hosts.master_ip, str(service_port)],
        ),
        start_new_session=True,
    )
    run_dir = tmp_path / "run"
    log_dir = tmp_path / "worker"
    try:
        run = _start(
            hosts.cmd(
                hosts.master_ns,
                [
                    sys.executable,
                    "-m",
                    "spikegate.harness",
                    "run",
                    str(scenario),
                    "--no-live",
                    "--out",
                    str(run_dir),
                ],
            )
        )
        worker = _start(
            hosts.cmd(
                hosts.worker_ns,
                [
                    sys.executable,
                    "-m",
                    "spikegate.harness",
                    "worker",
                    "--master",
                    f"{hosts.master_ip}:{master_port}",
                    "--log-dir",
                    str(log_dir),
                ],
            )
        )
        code, out = finish(run, 90)
        wcode, wout = finish(worker, 20)
    finally:
        responder.terminate()
        responder.wait(5)
    assert code == 0, f"{out}\n--- the worker:\n{wout}"
    assert wcode == 0, wout
    merged = {int(r["t"]): r for r in rows(run_dir / "requests.jsonl")}
    own = {int(r["t"]): r for p in sorted(log_dir.glob("sent/*/requests.jsonl")) for r in rows(p)}
    assert own and set(own) <= set(merged)
    for t, mine in own.items():
        assert merged[t]["sent"] == mine["sent"], t
        assert +Counter(merged[t]["outcomes"]) == +Counter(mine["outcomes"]), t
    assert sum(r["intended"] for r in merged.values()) >= 0.95 * 40 * 8
    assert sum(r["outcomes"].get("accepted", 0) for r in merged.values()) > 0
    own_ids = sorted(i for p in log_dir.glob("sent/*/acked.txt") for i in p.read_text().split())
    got = sorted(i for p in (run_dir / "acked").glob("*.txt") for i in p.read_text().split())
    assert own_ids and got == own_ids, "every id the worker saw acked reached the master, once"
    doc = json.loads((run_dir / "workers.json").read_text())
    assert [w["state"] for w in doc["workers"].values()] == ["done"]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["cleanup"]["clean"] is True
