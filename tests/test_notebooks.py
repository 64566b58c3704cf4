"""Every notebook under notebooks/ executes top to bottom without error (each
notebook asserts its own results), so notebooks cannot rot."""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import REPO_ROOT

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO_ROOT, "notebooks", "*.ipynb")))

pytestmark = pytest.mark.slow


def test_quickstart_exists():
    assert any(p.endswith("quickstart.ipynb") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    env_flags = os.environ.get("XLA_FLAGS")
    try:
        # The notebook runs on the default device set (1 CPU device), like a user's would.
        os.environ.pop("XLA_FLAGS", None)
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": REPO_ROOT}}).execute()
    finally:
        if env_flags is not None:
            os.environ["XLA_FLAGS"] = env_flags
