"""The stack of one run: every dependency of the target, brought up in order, torn down in reverse.

    redis-server ─┐                      ┌─ proxy "redis"  ─> redis
    chaos server ─┼─> proxies ───────────┼─ proxy "kafka"  ─> broker (advertises the proxy)
    DSP bidders  ─┘   (before the broker)└─ proxy "dsp-N"  ─> bidder N
                                   then: broker, target (talks to all of them via proxies)

The target reaches Redis, Kafka and every DSP only through their proxies, so every toxic
lands on real traffic. The broker's port is picked first so its proxy can exist before it
starts: the broker then advertises the proxy's address and clients that bootstrap anywhere
end up talking through the proxy. `Stack.close()` stops everything in reverse order and
`verify_clean()` proves nothing is left: no child process, no toxic, no listening port.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psutil
import tomli_w

from spikegate.chaos.client import ChaosClient, ProxyInfo
from spikegate.chaos.errors import ChaosError
from spikegate.chaos.server import server_command
from spikegate.harness import lifeline
from spikegate.harness.errors import EnvironmentProblem
from spikegate.harness.services import (
    DspBidders,
    ExternalService,
    KafkaBroker,
    ManagedProcess,
    PortInUse,
    RedisServer,
    TargetServer,
    free_port,
    python_env,
    wait_reachable,
)

__all__ = [
    "ChaosServerProcess",
    "Dependency",
    "Stack",
    "StackSettings",
    "leftover_children",
    "listening_ports",
    "port_listening",
    "python_env",
    "reference_dependencies",
]


class ChaosServerProcess(ManagedProcess):
    """`python -m chaos.server` on a free loopback port; `.url` is its API."""

    name = "chaos"
    title = "chaos server"
    ready_timeout_s = 15.0

    def __init__(self, log_dir: Path, *, seed: int | None = None) -> None:
        super().__init__(log_dir)
        self.port = 0
        self.seed = seed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def choose_ports(self) -> None:
        self.port = free_port()

    def command(self) -> list[str]:
        cmd = server_command(self.port)
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        return [*cmd, "--log-level", "WARNING"]

    def env(self) -> dict[str, str]:
        return python_env()

    def is_ready(self) -> bool:
        ChaosClient(self.url, timeout_s=0.5).version()
        return True


def listening_ports() -> set[int] | None:
    """TCP ports in the LISTEN state on this host (Linux: /proc/net/tcp*); None if unknown."""
    ports: set[int] = set()
    known = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        known = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if known else None


def port_listening(port: int) -> bool:
    """True when something listens on `port`.

    Read from the socket tables where there are some: a test bind would also fail on a port
    that is merely the local end of some other process's outgoing connection.
    """
    ports = listening_ports()
    if ports is not None:
        return port in ports
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _host_port(url: str, default_port: int) -> str:
    """ "redis://h:p/0" -> "h:p"; "h:p" -> "h:p"."""
    if "://" not in url:
        return url.split(",")[0].strip()
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or default_port}"


@dataclass(frozen=True)
class Dependency:
    """One dependency behind a proxy named `name`: started by the harness (`start`: redis,
    kafka, or dsp for the reference target's simulated bidders) or the user's (`upstream`
    host:port); `listen` fixes the proxy's address (default: a free loopback port)."""

    name: str
    upstream: str | None = None
    start: Literal["redis", "kafka", "dsp"] | None = None
    listen: str | None = None


def reference_dependencies(settings: StackSettings) -> list[Dependency]:
    """The reference target's Redis, Kafka and DSP bidders, declared like a user's."""
    s = settings
    redis = (
        Dependency("redis", upstream=_host_port(s.redis_url, 6379))
        if s.redis_url
        else Dependency("redis", start="redis")
    )
    kafka = (
        Dependency("kafka", upstream=_host_port(s.kafka_bootstrap, 9092))
        if s.kafka_bootstrap
        else Dependency("kafka", start="kafka")
    )
    dsps = [Dependency(f"dsp-{i}", start="dsp") for i in range(1, s.dsp_count + 1)]
    return [redis, kafka, *dsps]


def _dep(deps: Sequence[Dependency], name: str) -> Dependency:
    return next(d for d in deps if d.name == name)


class StackSettings:
    """What the stack needs from a scenario (kept apart so tests can build one by hand)."""

    def __init__(
        self,
        *,
        dsp_count: int = 3,
        seed: int = 0,
        redis_url: str | None = None,
        kafka_bootstrap: str | None = None,
        toxiproxy_url: str | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        if not 1 <= dsp_count <= 64:
            raise ValueError(f"dsp_count must be between 1 and 64 (got {dsp_count})")
        if not start_timeout_s > 0:
            raise ValueError(f"start_timeout_s must be > 0 (got {start_timeout_s})")
        self.dsp_count = dsp_count
        self.seed = seed
        self.redis_url = redis_url
        self.kafka_bootstrap = kafka_bootstrap
        self.toxiproxy_url = toxiproxy_url
        self.start_timeout_s = start_timeout_s


class Stack:
    """Redis, the chaos server and its proxies, Kafka, the DSP bidders and the target.

    `up(target_config)` starts them in dependency order, where `target_config(redis_url,
    kafka_bootstrap, dsp_urls)` returns the target's config dict for those (proxied)
    addresses. `close()` stops whatever was started, in reverse order, always.
    """

    def __init__(
        self,
        run_dir: Path,
        settings: StackSettings,
        *,
        guard: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.run_dir = run_dir
        # Spawning a child and creating a proxy happen under `guard()`: the orchestrator's
        # signal handler waits until the child is registered (or the proxy recorded), so an
        # interrupt never leaves something started but unknown to close().
        self._guard = guard
        self.log_dir = run_dir / "logs"
        self.settings = settings
        self.redis: RedisServer | ExternalService | None = None
        self.chaos_proc: ChaosServerProcess | None = None
        self.chaos: ChaosClient | None = None
        self.kafka: KafkaBroker | ExternalService | None = None
        self.dsps: DspBidders | None = None
        self.target: ManagedProcess | None = None
        self.proxies: dict[str, ProxyInfo] = {}
        self.kafka_direct = ""  # the broker's own address (read-back bypasses nothing: same data)
        self.target_config: dict[str, Any] = {}
        self.startup_s = 0.0
        self._started: list[ManagedProcess] = []
        self._ports: set[int] = set()
        self._t_start = time.monotonic()
        self.timings: dict[str, float] = {}  # component -> seconds from start to ready
        self._labels: dict[int, str] = {}  # a started dependency's name, when not its kind

    # -- bring-up ------------------------------------------------------------------------

    def _spawn(self, proc: ManagedProcess) -> None:
        """Start without waiting (ports chosen now); `_await` waits for it later."""
        self._started.append(proc)
        proc.choose_ports()
        with self._guard():
            proc.start()

    def _await(self, proc: ManagedProcess, proxy: str | None = None) -> None:
        """Wait for a spawned child; a lost bind race restarts it on fresh ports (and the
        proxy in front of it follows)."""
        try:
            proc.wait_ready(self.settings.start_timeout_s)
        except PortInUse:
            with self._guard():
                proc.up(self.settings.start_timeout_s)
            if proxy is not None and self.chaos is not None:
                port = getattr(proc, "port", 0)
                self.proxies[proxy] = self.chaos.update_proxy(proxy, upstream=f"127.0.0.1:{port}")
        self.timings[self._labels.get(id(proc), proc.name)] = round(
            time.monotonic() - self._t_start, 3
        )

    def up(self, target_config: Any) -> None:
        """Bring the reference stack up; `target_config(redis_url, kafka_bootstrap, dsp_urls)`
        -> dict. The reference target is one case of `up_service`: its Redis, Kafka and DSP
        bidders are declared as dependencies like a user's."""
        log_dir = self.log_dir

        def target(listen: Mapping[str, str]) -> ManagedProcess:
            dsp_urls = {n: f"http://{a}" for n, a in listen.items() if n.startswith("dsp-")}
            config = target_config(f"redis://{listen['redis']}/0", listen["kafka"], dsp_urls)
            self.target_config = dict(config)
            config_path = self.run_dir / "target.toml"
            config_path.write_text(tomli_w.dumps(_toml_ready(self.target_config)), "utf-8")
            return TargetServer(log_dir, config_path=config_path)

        self.up_service(reference_dependencies(self.settings), target, deps_first=False)

    def up_service(
        self,
        deps: Sequence[Dependency],
        target: Callable[[Mapping[str, str]], ManagedProcess | None],
        *,
        deps_first: bool = True,
    ) -> None:
        """Start the chaos server, every dependency (started ones, or checked reachable),
        a proxy in front of each, then `target(proxy listen address by dependency name)`
        (None: a service the user runs). Independent children start together; ports are
        picked before the proxies are made, so the proxies can exist before their upstreams
        listen, and the target only ever learns the proxies' addresses. With `deps_first` the
        target starts once every started dependency is ready (a service may connect at
        start-up); the reference target retries, so it starts beside them."""
        s = self.settings
        self._t_start = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not s.toxiproxy_url:
            self.chaos_proc = ChaosServerProcess(self.log_dir, seed=s.seed)
            self._spawn(self.chaos_proc)
        dsp_deps = [d for d in deps if d.start == "dsp"]
        if dsp_deps:
            self.dsps = DspBidders(self.log_dir, count=len(dsp_deps), seed=s.seed)
            self._spawn(self.dsps)
        redis: dict[str, RedisServer] = {}
        for dep in deps:
            if dep.start == "redis":
                redis[dep.name] = proc = RedisServer(self.log_dir)
                proc.log_path = self.log_dir / f"{dep.name}.log"
                self._label(proc, dep.name)
                self._spawn(proc)
        self._connect_chaos()
        brokers: list[tuple[str, KafkaBroker]] = []
        for dep in deps:
            if dep.start == "redis":
                self._proxy(dep.name, f"127.0.0.1:{redis[dep.name].port}", dep.listen)
            elif dep.start == "kafka":
                port = free_port()  # fixed: the proxy points here, a retry must keep it
                listen = self._proxy(dep.name, f"127.0.0.1:{port}", dep.listen).listen
                broker = KafkaBroker(self.log_dir, port=port, advertised=listen)
                broker.log_path = self.log_dir / f"{dep.name}.log"
                self._label(broker, dep.name)
                brokers.append((dep.name, broker))
                self._started.append(broker)
                with self._guard():
                    broker.start()
            elif dep.start == "dsp":
                continue
            else:
                assert dep.upstream is not None
                self._check_upstream(dep)
                self._proxy(dep.name, dep.upstream, dep.listen)
        if self.dsps is not None:
            for dep, port in zip(dsp_deps, self.dsps.ports, strict=True):
                self._proxy(dep.name, f"127.0.0.1:{port}", dep.listen)
        if "redis" in redis:
            self.redis = redis["redis"]
        elif any(d.name == "redis" for d in deps):
            self.redis = ExternalService(url=f"redis://{_dep(deps, 'redis').upstream}/0")
        for name, broker in brokers:
            if name == "kafka":
                self.kafka = broker
        if self.kafka is None and any(d.name == "kafka" and d.upstream for d in deps):
            self.kafka = ExternalService(bootstrap=_dep(deps, "kafka").upstream)
        addresses = {name: info.listen for name, info in self.proxies.items()}
        made = target(addresses)
        if made is not None and not deps_first:
            self.target = made
            self._spawn(made)
        for name, proc in redis.items():
            self._await(proc, name)
        for _, broker in brokers:
            self._await(broker)
        if self.dsps is not None:
            self._await_dsps()
        if made is not None and deps_first:
            self.target = made
            self._spawn(made)
        if made is not None:
            self._await(made)
        self._check_clean()
        self._ports.update(self._own_ports())
        self.startup_s = time.monotonic() - self._t_start

    def _label(self, proc: ManagedProcess, name: str) -> None:
        self._labels[id(proc)] = name

    def _check_upstream(self, dep: Dependency) -> None:
        """An upstream the user runs must accept connections before anything is loaded."""
        assert dep.upstream is not None
        bound = min(5.0, self.settings.start_timeout_s)
        error = wait_reachable(dep.upstream, bound)
        if error is not None:
            raise EnvironmentProblem(
                f"dependency {dep.name!r}: nothing accepts connections at {dep.upstream} "
                f"(tried for {bound:g} s: {error})",
                hint=f"start it, fix [[dependencies]] name = {dep.name!r} upstream, or let "
                'the harness start one (start = "redis" | "kafka")',
            )

    def _check_clean(self) -> None:
        assert self.chaos is not None
        try:
            clean = self.chaos.is_clean()
        except ChaosError as exc:
            raise EnvironmentProblem(f"the chaos server stopped answering: {exc}") from exc
        if not clean:
            raise EnvironmentProblem(
                f"the chaos server at {self.chaos.url} has toxics or disabled proxies before load",
                hint="reset it (POST /reset) or use a toxiproxy no other run is using",
            )

    def _connect_chaos(self) -> None:
        if self.chaos_proc is None:
            url = self.settings.toxiproxy_url or ""
            self.chaos = ChaosClient(url)
            try:
                self.chaos.wait_ready(self.settings.start_timeout_s)
            except ChaosError as exc:
                raise EnvironmentProblem(
                    f"toxiproxy at {url} does not answer: {exc}",
                    hint="start toxiproxy-server, or drop stack.toxiproxy_url for the embedded one",
                ) from exc
            return
        self._await(self.chaos_proc)
        self.chaos = ChaosClient(self.chaos_proc.url)

    def _proxy(self, name: str, upstream: str, listen: str | None = None) -> ProxyInfo:
        assert self.chaos is not None
        try:
            with self._guard():
                info = self.chaos.create_proxy(name, upstream, listen or "127.0.0.1:0")
        except ChaosError as exc:
            raise EnvironmentProblem(
                f"cannot create the chaos proxy {name!r} -> {upstream}: {exc}",
                hint="a proxy of that name may exist on a shared toxiproxy; remove it",
            ) from exc
        self.proxies[name] = info
        return info

    def _await_dsps(self) -> None:
        """Wait for the bidders; after a lost bind race every dsp proxy follows the new ports."""
        assert self.dsps is not None and self.chaos is not None
        old = list(self.dsps.ports)
        self._await(self.dsps)
        if self.dsps.ports != old:
            for name, port in zip(self.dsps.names, self.dsps.ports, strict=True):
                self.proxies[name] = self.chaos.update_proxy(name, upstream=f"127.0.0.1:{port}")

    def _own_ports(self) -> set[int]:
        ports: set[int] = set()
        for proc in self._started:
            for attr in ("port",):
                value = getattr(proc, attr, 0)
                if isinstance(value, int) and value:
                    ports.add(value)
        if self.dsps is not None:
            ports.update(self.dsps.ports)
        if self.chaos_proc is not None:  # proxies of an external toxiproxy are not ours to check
            ports.update(p.port for p in self.proxies.values())
        return ports

    # -- during the run --------------------------------------------------------------------

    def children(self) -> list[ManagedProcess]:
        """The processes this stack started, in start order."""
        return list(self._started)

    def dead_child(self) -> ManagedProcess | None:
        """The first child that exited on its own, if any."""
        for proc in self._started:
            if proc.returncode is not None:
                return proc
        return None

    def components(self) -> dict[str, dict[str, Any]]:
        """meta.json's `components`: name -> url/bootstrap, pid, log."""
        out: dict[str, dict[str, Any]] = {}
        for proc in self._started:
            entry: dict[str, Any] = {"pid": proc.pid, "log": f"logs/{proc.log_path.name}"}
            if isinstance(proc, KafkaBroker):
                entry["bootstrap"] = proc.bootstrap
            elif isinstance(proc, DspBidders):
                entry["urls"] = dict(zip(proc.names, proc.urls, strict=True))
            else:
                url = getattr(proc, "url", None)
                if isinstance(url, str):
                    entry["url"] = url
            out[self._labels.get(id(proc), proc.name)] = entry
        for name, info in self.proxies.items():
            out[f"proxy:{name}"] = {"listen": info.listen, "upstream": info.upstream}
        if self.chaos is not None and self.chaos_proc is None:
            out["chaos"] = {"url": self.chaos.url, "external": True}
        return out

    # -- teardown --------------------------------------------------------------------------

    def reset_chaos(self) -> bool:
        """POST /reset; False when the server could not be reached."""
        if self.chaos is None:
            return True
        try:
            self.chaos.reset()
        except ChaosError:
            return False
        return True

    def toxics_left(self) -> list[str]:
        """'proxy/toxic' (or 'proxy (disabled)') still on the chaos server."""
        if self.chaos is None:
            return []
        if self.chaos_proc is not None and not self.chaos_proc.alive:
            return []  # stopped with everything in it
        left: list[str] = []
        for name, info in self.chaos.proxies().items():
            if name not in self.proxies:
                continue
            left += [f"{name}/{t.name}" for t in info.toxics]
            if not info.enabled:
                left.append(f"{name} (disabled)")
        return left

    def close(self, *, hurry: bool = False) -> None:
        """Stop everything started, newest first; on an external toxiproxy remove our proxies."""
        if self.chaos is not None and self.chaos_proc is None:
            for name in list(self.proxies):
                with contextlib.suppress(ChaosError):
                    self.chaos.delete_proxy(name)
        for proc in reversed(self._started):
            with contextlib.suppress(Exception):
                proc.stop(1.0 if hurry else None)

    def ports(self) -> set[int]:
        return set(self._ports) | self._own_ports()


def _toml_ready(value: Any) -> Any:
    """Drop None (TOML has no null) and stringify paths, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_toml_ready(v) for v in value if v is not None]
    if isinstance(value, Path):
        return str(value)
    return value


def leftover_children() -> list[psutil.Process]:
    """Live (non-zombie) processes of ours: children, recursively, and processes that carry
    this harness's token (descendants that left the tree); the guardian is not one."""
    alive: dict[int, psutil.Process] = {}
    skip = set(lifeline.guardian_pids())
    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        kids = []
    kids += [proc for proc, _ in lifeline.marked_processes({lifeline.owner_token()})]
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            if kid.pid not in skip and kid.status() != psutil.STATUS_ZOMBIE:
                alive.setdefault(kid.pid, kid)
    return list(alive.values())
