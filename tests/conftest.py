import os

import pytest

from nndiff.cli.main import main

# Tiny settings: the point is that every stage runs and writes what it should, not quality.
TINY_RUN = ["--quiet", "run", "--task", "digits-cnn", "-k", "24", "--burn-in", "10", "--heldout", "6", "--ae-steps", "40",
            "--diffusion-steps", "40", "-n", "6", "--steps", "10"]


def pytest_configure(config):
    # Under pytest-xdist every worker gets its share of the cores (its subprocesses too): torch's
    # default of one thread per core would put two workers' threads on each core, slower than one.
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        share = max(1, len(os.sched_getaffinity(0)) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory):
    # Generated datasets go to a per-session cache unless the caller points NNDIFF_CACHE elsewhere.
    os.environ.setdefault("NNDIFF_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _fresh_predictions():
    # Each test evaluates for itself: predictions memoized by an earlier test (memo.py) would let a
    # test that patches an evaluation path, or counts evaluations, see another test's results.
    from nndiff.evaluation.memo import MEMO

    MEMO.clear()
    yield
    MEMO.clear()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete run directory of the digits task with tiny settings (about 10 s)."""
    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(TINY_RUN + ["--out", str(out)]) == 0
    return out


# A generator trained long enough to have learned something (about a minute): the distribution
# check must not flag it, and the distributed tests compare their runs with it.
TRAIN_SHORT = ["--ae-steps", "300", "--diffusion-steps", "600"]
TRAINED_RUN = ["--quiet", "run", "--task", "digits-cnn", "-k", "60", "--heldout", "20", *TRAIN_SHORT, "-n", "50", "--device", "cpu"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "digits"
    assert main(TRAINED_RUN + ["--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def family_run(tmp_path_factory):
    """A finished digits-binary family run (never modify it: copy it first)."""
    from nndiff.families.run import run_family
    from tests.checks import tiny_family

    out = tmp_path_factory.mktemp("family") / "digits-binary"
    return out, run_family(tiny_family(), out, progress=False, log=lambda *_: None)
