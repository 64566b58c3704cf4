"""Test configuration: 8 simulated CPU devices for the whole session (so sharding
tests can build an 8-device mesh), strict rank promotion, and shared fixtures."""

import os

# Must happen before jax initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache per test run, shared by the xdist workers and the
# subprocesses they start (notebook kernels, multi-process tests): many tests compile the
# same programs (a tiny model's step, sampler, evaluator), and compiling dominates CPU tests.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    __import__("tempfile").gettempdir(), f"jgen-test-xla-cache-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.path.join(REPO_ROOT, "..", "shared", "data", "mnist")


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT
