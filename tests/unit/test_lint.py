"""ruff and mypy, as configured in pyproject.toml, are clean on the code.

mypy checks a copy of the tree with sinks/ and state/ inside cdc/ (they are installed as cdc.sinks and
cdc.state), with its cache in .mypy_cache/ so that a second run takes seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str) -> Path:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' (deploy/setup.sh does)")
    return path


def test_ruff_is_clean() -> None:
    result = subprocess.run([str(_tool("ruff")), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"ruff check (ruff check --fix fixes most):\n{result.stdout}{result.stderr}"


def test_mypy_is_clean(tmp_path: Path) -> None:
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.html", "*.sql")
    shutil.copytree(REPO / "cdc", tmp_path / "cdc", ignore=skip)
    shutil.copytree(REPO / "sinks", tmp_path / "cdc" / "sinks", ignore=skip)
    shutil.copytree(REPO / "state", tmp_path / "cdc" / "state", ignore=skip)
    result = subprocess.run([str(_tool("mypy")), "--config-file", str(REPO / "pyproject.toml"),
                             "--cache-dir", str(REPO / ".mypy_cache"), "cdc"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"mypy:\n{result.stdout}{result.stderr}"
