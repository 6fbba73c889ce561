"""Fixtures of the chart tests: the chart loaded once by Helm's engine (helm-python-sdk, no helm binary)."""

from __future__ import annotations

from collections.abc import Iterator

import helm_python as helm
import pytest

from .render import CHART


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    """The chart, loaded once."""
    with helm.Chart.load(CHART) as loaded:
        yield loaded
