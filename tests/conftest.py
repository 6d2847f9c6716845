import os

import pytest

from nndiff.cli import main

# Tiny settings: the point is that every stage runs and writes what it should, not quality.
TINY_RUN = ["--quiet", "run", "--task", "digits-cnn", "-k", "24", "--burn-in", "10", "--heldout", "6", "--ae-steps", "40",
            "--diffusion-steps", "40", "-n", "6", "--steps", "10"]


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory):
    # Generated datasets go to a per-session cache unless the caller points NNDIFF_CACHE elsewhere.
    os.environ.setdefault("NNDIFF_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete run directory of the digits task with tiny settings (about 10 s)."""
    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(TINY_RUN + ["--out", str(out)]) == 0
    return out
