from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from hpo_bench import get_task


def pytest_configure(config):
    """Tests never read or write the user's caches: every cache root points into a fresh folder
    (set in the environment, so subprocesses the tests start inherit it)."""
    root = tempfile.mkdtemp(prefix="hpo-bench-test-cache-")
    config._hpo_bench_cache_root = root
    os.environ["HPO_BENCH_CACHE_DIR"] = os.path.join(root, "cache")
    os.environ["HPO_BENCH_DATA"] = os.path.join(root, "data")  # the dataset cache (hpo_bench.data) too


def pytest_unconfigure(config):
    root = getattr(config, "_hpo_bench_cache_root", None)
    if root:
        shutil.rmtree(root, ignore_errors=True)


def pytest_collection_finish(session):
    """A test module that sets torch's default dtype at import changes it for every later test of its
    process (an xdist worker runs hundreds): refuse the run, naming the rule."""
    import torch

    if torch.get_default_dtype() != torch.float32:
        raise pytest.UsageError(f"a test module set torch's default dtype to {torch.get_default_dtype()} at "
                                "import; pass dtype= to the tensors it builds instead")


@pytest.fixture(autouse=True)
def _default_dtype_unchanged():
    """A test that changes torch's default dtype fails (and the dtype is restored for the next one)."""
    import torch

    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    if after != before:
        torch.set_default_dtype(before)
        pytest.fail(f"the test changed torch's default dtype from {before} to {after}; pass dtype= instead")


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (restored after): the non-smooth tests time nothing, but their
    small solves are fastest, and reproducible run to run, on one thread."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def ridge():
    return get_task("ridge", n=60, p=6, rho=0.6, seed=3)


@pytest.fixture
def ridge_pf():
    return get_task("ridge_per_feature", n=60, p=6, rho=0.6, seed=3)


@pytest.fixture
def seed_toy():
    return get_task("seed_toy")
