"""Fixtures: the real sample photos and the real model. Shared helpers are in helpers.py."""

from __future__ import annotations

import pytest

from helpers import PHOTOS, LayersOnce


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


@pytest.fixture(scope="session", autouse=True)
def layers_once():
    """Each state dict's layer list is built and checked once a session, not
    once per in-process conversion (see helpers.LayersOnce)."""
    from anime_cli import models

    real = models.layers_for
    models.layers_for = LayersOnce(real)
    yield
    models.layers_for = real
