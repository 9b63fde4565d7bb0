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
