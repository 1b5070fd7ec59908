"""`python -m spikegate.target [--host H] [--port P]`: serve the ad server under uvicorn.

The configuration comes from SPIKEGATE_TARGET_CONFIG (TOML) and SPIKEGATE__SECTION__KEY
overrides, exactly as under `uvicorn --factory target.app:create_app_from_env`.
"""

from __future__ import annotations

import argparse

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spikegate.target", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    uvicorn.run(
        "spikegate.target.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        access_log=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
