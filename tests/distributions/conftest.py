"""Fixtures for the distribution tests: a scoped float64 context, since most
references (scipy.stats, quadrature) are float64 and x64 must not be enabled globally."""

import jax
import pytest


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled, restoring the default afterwards."""
    with jax.enable_x64(True):
        yield
