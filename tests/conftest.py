from __future__ import annotations

import pytest

from hpo_bench import get_task


@pytest.fixture
def ridge():
    return get_task("ridge", n=60, p=6, rho=0.6, seed=3)


@pytest.fixture
def ridge_pf():
    return get_task("ridge_per_feature", n=60, p=6, rho=0.6, seed=3)


@pytest.fixture
def seed_toy():
    return get_task("seed_toy")
