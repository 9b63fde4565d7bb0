from __future__ import annotations

import math

import pytest
import torch

from hpo_bench.core.space import Block, Space, SpaceError


def test_log_transform_roundtrip_and_bounds():
    space = Space((Block("lam", kind="per_feature", size=3, low=1e-4, high=1e2, init=1.0),
                   Block("mu", low=-1.0, high=1.0, transform="none", init=0.5)))
    assert space.dim == 4
    assert space.names == ["lam[0]", "lam[1]", "lam[2]", "mu"]
    theta = space.init_theta()
    assert torch.allclose(theta, torch.tensor([0.0, 0.0, 0.0, 0.5], dtype=torch.float64))
    lam = space.to_natural(theta + 1.0)
    assert torch.allclose(lam[:3], torch.full((3,), math.e, dtype=torch.float64))
    assert float(lam[3]) == pytest.approx(1.5)
    assert torch.allclose(space.from_natural(lam), theta + 1.0)
    far = torch.tensor([100.0, -100.0, 0.0, 7.0], dtype=torch.float64)
    proj = space.project(far)
    assert space.contains(proj)
    assert not space.contains(far)
    assert float(space.to_natural(proj)[0]) == pytest.approx(1e2)
    assert float(space.to_natural(proj)[1]) == pytest.approx(1e-4)
    assert float(proj[3]) == 1.0
    assert space.split(theta)["mu"].shape == (1,)


def test_natural_values_are_positive_under_log_transform():
    space = Space((Block("lam", kind="per_feature", size=5, low=1e-8, high=1e8),))
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        theta = space.sample(gen) * 3
        assert bool((space.to_natural(theta) > 0).all())


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(name="lam", low=1.0, high=0.5), "`low < high` must hold"),
    (dict(name="lam", low=0.0, high=1.0, init=0.5), "needs `low > 0`"),
    (dict(name="lam", kind="per_galaxy"), "`kind` must be one of"),
    (dict(name="lam", kind="scalar", size=3), "scalar block has `size == 1`"),
    (dict(name="lam", transform="sqrt"), "`transform` must be one of"),
    (dict(name="lam", low=1.0, high=2.0, init=5.0), "`low <= init <= high`"),
    (dict(name="lam", low=float("-inf"), high=1.0, transform="none", init=0.0), "bounds must be finite"),
    (dict(name="lam", kind="per_feature", size=0), "`size >= 1`"),
])
def test_block_errors_name_block_and_rule(kwargs, fragment):
    with pytest.raises(SpaceError) as exc:
        Block(**kwargs)
    assert "'lam'" in str(exc.value)
    assert fragment in str(exc.value)


def test_space_errors():
    with pytest.raises(SpaceError, match="at least one block"):
        Space(())
    with pytest.raises(SpaceError, match=r"unique, but \['a'\] repeat"):
        Space((Block("a"), Block("a")))
    space = Space((Block("a"),))
    with pytest.raises(SpaceError, match="length 1"):
        space.to_natural(torch.zeros(2))
