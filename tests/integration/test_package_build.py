"""The package as the container image builds it: `pip wheel .` from exactly what the Dockerfile's
build stage copies, in an isolated build environment (setuptools from PyPI), must give a wheel with
the C row decoder."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def test_the_image_build_stage_builds_a_wheel_with_the_c_row_decoder(tmp_path):
    """What the build stage COPYs is enough for `pip wheel .` to build the package with its C part."""
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    build_stage, stages = [], 0
    for instruction in parser.structure:
        stages += instruction["instruction"] == "FROM"
        if stages > 1:
            break
        build_stage.append(instruction)
    for copy_ in (i["value"].split() for i in build_stage if i["instruction"] == "COPY"):
        *sources, dest = copy_
        for source in sources:
            target = tmp_path / dest / Path(source).name if dest.endswith("/") else tmp_path / dest
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",  # isolated, as in the image
                    "--wheel-dir", str(tmp_path / "wheels"), str(tmp_path)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(re.fullmatch(r"cdc/source/_rowdecode\..*\.so", n) for n in names), names
    assert "cdc/source/row_decoder.py" in names and "cdc/sinks/search.py" in names
