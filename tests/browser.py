"""Debian's Chromium for the live page's browser test and benchmark: where it is, and the
flags a headless run needs on this closed network (no sandbox as root, no background
connections that the machine would refuse)."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
