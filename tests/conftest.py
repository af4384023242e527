"""Fixtures: the real sample photos and the real model. Shared helpers are in helpers.py."""

from __future__ import annotations

import pytest

from helpers import PHOTOS


@pytest.fixture(scope="session")
def photos():
    if not PHOTOS.is_dir():
        pytest.fail(f"sample photos not found at {PHOTOS} (../shared beside the checkout, or $ANIME_CLI_SHARED)")
    return PHOTOS


@pytest.fixture(scope="session")
def stylizer():
    from anime_cli.stylize.session import Stylizer

    return Stylizer.from_style("hayao")


@pytest.fixture(scope="session")
def detector():
    """MTCNN, shared like the stylizer: a detection keeps nothing of its picture."""
    from anime_cli.faces.enhance import FaceDetector

    return FaceDetector.load()
