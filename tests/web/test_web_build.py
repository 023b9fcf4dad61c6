"""The editor's unit tests (Vitest) and the reproducible-build check, run from pytest so that
`make test` covers them. Skipped where Node.js / npm are not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"

needs_npm = pytest.mark.skipif(shutil.which("npm") is None or shutil.which("node") is None, reason="Node.js and npm are not installed")


def _npm_ci() -> None:
    stamp = WEB / "node_modules" / ".package-lock.json"
    lock = WEB / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=True, timeout=300)


@needs_npm
def test_vitest_unit_tests() -> None:
    _npm_ci()
    r = subprocess.run(["npx", "vitest", "run", "--reporter=dot"], cwd=WEB, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


@needs_npm
def test_committed_dist_matches_the_sources() -> None:
    _npm_ci()
    r = subprocess.run(["./check-dist.sh"], cwd=WEB, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
