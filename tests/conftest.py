"""Shared fixtures: an isolated home for Jupyter/gunicorn, and the NEMA chest radiograph."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary HOME with Jupyter, IPython and matplotlib dirs inside it."""
    home = tmp_path_factory.mktemp("home")
    return home


@pytest.fixture(scope="session")
def rg1_path() -> Path:
    """The NEMA chest CR (1955 x 1841, MONOCHROME1) from pydicom-data."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")
    if path is None:
        pytest.fail("pydicom-data is not installed: pip install pydicom-data")
    return Path(path)


@pytest.fixture(scope="session")
def rg1_j2k_path() -> Path:
    """The same radiograph, JPEG 2000 compressed."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_J2KR.dcm")
    if path is None:
        pytest.fail("pydicom-data is not installed: pip install pydicom-data")
    return Path(path)


@pytest.fixture
def images(tmp_path: Path, rg1_path: Path) -> Path:
    """A folder holding a copy of the NEMA radiograph as ``rg1.dcm`` (for manifests)."""
    import shutil

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copyfile(rg1_path, folder / "rg1.dcm")
    return folder
