"""`python -m spikegate.target [--host H] [--port P]`: serve the ad server under uvicorn.

The configuration comes from SPIKEGATE_TARGET_CONFIG (TOML) and SPIKEGATE__SECTION__KEY
overrides, exactly as under `uvicorn --factory spikegate.target.app:create_app_from_env`,
which also still serves it. This entry point adds the lean rejection path
(`lean_http.EdgeProtocol`: the edge's 401/429 answered inside the HTTP protocol); the harness
starts the target through it.
"""

from __future__ import annotations

import argparse

import uvicorn

from spikegate.target.app import create_app_from_env
from spikegate.target.lean_http import protocol_for


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spikegate.target", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=None,
        metavar="S",
        help="stop waiting for open connections after S seconds at shutdown",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="uvicorn's per-request log line (default: the config's `access_log`)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    if args.timeout_graceful_shutdown is not None and args.timeout_graceful_shutdown < 0:
        parser.error(
            f"--timeout-graceful-shutdown must be >= 0, got {args.timeout_graceful_shutdown}"
        )
    app = create_app_from_env()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        http=protocol_for(app),
        access_log=app.state.config.access_log if args.access_log is None else args.access_log,
        proxy_headers=False,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )


if __name__ == "__main__":
    main()
