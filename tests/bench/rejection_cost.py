"""Benchmark: the target's own CPU per designed rejection (r) against per admitted /bid (a).

    python tests/bench/rejection_cost.py [--rate 300] [--window 6] [--rounds 3]
                                         [--compare-src OLD/target]

Why r/a matters (issue 14): with CPU r per designed rejection and a per admitted request, the
goodput at k times capacity is at most (1 - k*r/a) / (1 - r/a) of capacity, whatever the
patterns decide. This prints r/a with that bound at 2x and 5x.

The measurement is `spikegate.harness.rejection_cost` (the one `spikegate curve` reports):
real redis-server, Tansu and three simulated DSPs; the target runs under uvicorn exactly as a
scenario starts it; each window sends one kind of request (admitted, 429, shed, idle) from a
separate load process, and the median over rounds is kept. `--compare-src` measures an older
checkout's target in the same run, windows alternating.

`*_net` figures subtract the idle CPU of the same wall time: what a request adds. The bound's
arithmetic is about that (capacity is what the CPU left after the process's own timers serves),
so the acceptance reads r/a net; the raw figure is printed beside it. The idle CPU is the same
whatever the requests are (uvicorn's 0.1 s tick, the loop-lag monitor, the Kafka client: ~25
wake-ups/s, ~0.2% of a core), but at 300/s it adds ~7 us to each cheap 429 and ~0.6% to an
admission.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# Serves `spikegate.target` imported from argv[1] (a checkout's target/ folder) instead of the
# installed one, the rest of spikegate staying this tree's: through the checkout's own
# `python -m spikegate.target` when it has one (lean_http), else uvicorn's CLI with the app
# factory (as the target ran before lean_http).
_LAUNCHER = """
import importlib.machinery, os, runpy, sys
src = os.path.abspath(sys.argv.pop(1))
class Finder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "spikegate.target":
            return importlib.machinery.PathFinder.find_spec(name, [os.path.dirname(src)])
        return None
sys.meta_path.insert(0, Finder)
port = sys.argv[sys.argv.index("--port") + 1]
if os.path.exists(os.path.join(src, "__main__.py")):
    sys.argv[1:] = ["--host", "127.0.0.1", "--port", port, "--no-access-log"]
    runpy.run_module("spikegate.target", run_name="__main__", alter_sys=True)
else:
    import uvicorn.main
    sys.argv[0] = "uvicorn"
    uvicorn.main.main()
"""


def bench(rate: float, window_s: float, rounds: int, compare_src: Path | None) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from spikegate.harness.rejection_cost import measure
    from spikegate.harness.services import TargetServer

    class CheckoutTarget(TargetServer):
        """The target served with `spikegate.target` from `compare_src` (see _LAUNCHER)."""

        def command(self) -> list[str]:
            """uvicorn's CLI arguments: _LAUNCHER uses them as they are, or takes the port."""
            assert compare_src is not None
            return [
                sys.executable, "-c", _LAUNCHER, str(compare_src),
                "--factory", "spikegate.target.app:create_app_from_env",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--no-access-log", "--no-proxy-headers",
            ]  # fmt: skip

    targets: dict[str, Any] = {"this_tree": TargetServer}
    if compare_src:
        targets["compare_src"] = CheckoutTarget
    tmp = Path(tempfile.mkdtemp(prefix="spikegate-rcost-"))
    result = measure(rate, window_s, rounds, tmp, targets=targets)
    if compare_src:
        result["compare_src"]["src"] = str(compare_src)
    result["acceptance"] = {"r_over_a_net_le_0.05": result["this_tree"]["r_over_a_net"] <= 0.05}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--window", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--compare-src",
        type=Path,
        help="also measure the target package from this target/ folder (e.g. an older "
        "checkout: git archive REV target | tar -x -C DIR), alternating in the same run",
    )
    args = p.parse_args()
    if not (0 < args.rate <= 5000 and 0 < args.window <= 600 and args.rounds >= 1):
        p.error("--rate in (0, 5000], --window in (0, 600], --rounds >= 1")
    if args.compare_src and not (args.compare_src / "__init__.py").is_file():
        p.error(f"--compare-src {args.compare_src}: not a package folder")
    print(json.dumps(bench(args.rate, args.window, args.rounds, args.compare_src), indent=2))


if __name__ == "__main__":
    main()
