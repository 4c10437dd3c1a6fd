"""What the command tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def data(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the module's ``template`` data directory (each module that uses
    ``data`` defines ``template``: its deployment, made once)."""
    d = tmp_path / "data"
    shutil.copytree(template, d)
    return d
