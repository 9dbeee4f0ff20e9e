"""Headless Chromium: the HTML report test's browser, and the README's screenshot (``make screenshot``).

Run as ``python -m tests.browser REPORT.html OUT.png`` to photograph the top of
a report (its summary) at the width a reader sees it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

MISSING = "no headless Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)"


def chromium() -> str | None:
    """The Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browse(executable: str, page: Path, *actions: str) -> subprocess.CompletedProcess:
    """Load ``page`` headless with Chromium's ``actions`` (``--screenshot=...``, ``--dump-dom``)."""
    return subprocess.run(
        [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
         "--v=0", *actions, page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )


def screenshot(executable: str, page: Path, out: Path, width: int = 1280, height: int = 4000) -> None:
    """Photograph ``page`` into ``out`` (PNG), ``width`` x ``height`` pixels from its top."""
    out.parent.mkdir(parents=True, exist_ok=True)
    loaded = browse(executable, page.resolve(), f"--screenshot={out.resolve()}", f"--window-size={width},{height}")
    if loaded.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium could not photograph {page}: {loaded.stderr.strip()[-500:]}")


def main(argv: list[str]) -> int:
    """``REPORT.html OUT.png``: the report's summary (its first screen and a half) as a PNG."""
    if len(argv) != 2:
        print("usage: python -m tests.browser REPORT.html OUT.png", file=sys.stderr)
        return 2
    executable = chromium()
    if executable is None:
        print(MISSING, file=sys.stderr)
        return 1
    try:
        screenshot(executable, Path(argv[0]), Path(argv[1]), height=1100)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
