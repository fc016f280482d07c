"""The layout is the architecture: the import contracts of pyproject.toml hold (import-linter).

sinks/ and state/ are installed as cdc.sinks and cdc.state (package-dir), which import-linter cannot
see in the source tree, so the check runs on a copy of the Python files in which they sit inside cdc/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _copy_tree(dst: Path) -> None:
    only_py = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.html", "*.sql")
    shutil.copytree(REPO / "cdc", dst / "cdc", ignore=only_py)
    shutil.copytree(REPO / "sinks", dst / "cdc" / "sinks", ignore=only_py)
    shutil.copytree(REPO / "state", dst / "cdc" / "state", ignore=only_py)


def test_import_contracts_hold(tmp_path: Path) -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail("lint-imports is not installed: pip install -e '.[test]' (deploy/setup.sh does)")
    _copy_tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_package_says_what_it_owns_and_may_import() -> None:
    import importlib

    for name in ("domain", "source", "snapshot", "broker", "reader", "runtime", "admin", "cli"):
        doc = importlib.import_module(f"cdc.{name}").__doc__ or ""
        assert len(doc.split()) >= 25 and "import" in doc, f"cdc/{name}/__init__.py: say what it owns and may import"


def test_no_flat_modules_left_in_cdc() -> None:
    flat = sorted(p.name for p in (REPO / "cdc").glob("*.py") if p.name != "__init__.py")
    assert not flat, f"modules belong in a role package (see cdc/*/__init__.py): {flat}"
