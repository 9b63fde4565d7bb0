"""The minibatch contract, the sampler, quadratic_bilevel's closed forms, the records of stochastic tuners,
and the conformance kit's tuner checks run on a minibatch task."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from hpo_bench.core._threads import one_thread
from hpo_bench.core.records import STOCHASTIC_COLUMNS, Budget, Recorder
from hpo_bench.core.registry import TASKS, TUNERS
from hpo_bench.stochastic._oracle import Sampler, generator
from hpo_bench.running.suite import SuiteError, load_suite
from hpo_bench.core.task import Task
from hpo_bench.tasks.quadratic_bilevel import QuadraticBilevel
from hpo_bench.testing import _tuner_checks

from _util import fd_grad

STOCHASTIC = sorted(n for n, c in TUNERS.items() if "stochastic" in getattr(c, "tags", ()))


@pytest.fixture(autouse=True, scope="module")
def one_thread_here():
    with one_thread():
        yield


def small(**kw):
    return QuadraticBilevel(**{"n": 40, "m": 20, "d_inner": 5, "d_outer": 2, "mu": 0.1, **kw})


# ------------------------------------------------------------- sampler
def test_shuffle_sees_every_example_once_per_epoch():
    s = Sampler(10, 4, mode="shuffle", gen=generator(0, "inner"))
    epoch = torch.cat([s.draw() for _ in range(3)])  # 4 + 4 + 2
    assert sorted(epoch.tolist()) == list(range(10))
    assert sorted(torch.cat([s.draw() for _ in range(3)]).tolist()) == list(range(10))


def test_replacement_draws_are_uniform_and_seeded():
    a = Sampler(5, 3, mode="replacement", gen=generator(7, "inner"))
    b = Sampler(5, 3, mode="replacement", gen=generator(7, "inner"))
    draws = torch.cat([a.draw() for _ in range(4000)])
    assert torch.equal(torch.cat([b.draw() for _ in range(4000)]), draws)
    counts = torch.bincount(draws, minlength=5).double()
    # chi-square with 4 degrees of freedom: 18.5 is its 99.9% quantile
    assert float(((counts - 2400) ** 2 / 2400).sum()) < 18.5
    assert generator(7, "inner").initial_seed() != generator(7, "outer").initial_seed()


def test_blocks_partition_the_examples():
    s = Sampler(10, 4, mode="shuffle", gen=generator(0, "inner"))
    blocks = s.blocks()
    assert sorted(torch.cat(blocks).tolist()) == list(range(10))
    assert [len(b) for b in blocks] == [4, 4, 2]
    assert torch.allclose(s.block_weights(), torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64))
    assert sorted(s.draw_block()[0] for _ in range(3)) == [0, 1, 2]  # one shuffled pass over the blocks


@pytest.mark.parametrize("kw, match", [({"mode": "cyclic"}, "`mode` must be one of"),
                                       ({"batch_size": 0}, "`n >= 1` and `batch_size >= 1`")])
def test_sampler_refuses_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        Sampler(10, **{"batch_size": 4, "mode": "shuffle", **kw}, gen=generator(0, "x"))


# ------------------------------------------------------------- quadratic_bilevel
@pytest.mark.parametrize("form", ["dense", "factored"])
def test_quadratic_bilevel_closed_forms(form):
    t = small(form=form)
    x = torch.tensor([0.3, -0.7], dtype=torch.float64)
    z = t.solve(x)
    assert float(t.inner_grad(z, x).norm()) <= 1e-12
    g_fd = fd_grad(lambda th: t.outer_loss(t.solve(th)), x, h=1e-5)
    assert torch.allclose(t.reference_hypergradient(x), g_fd, rtol=1e-7, atol=1e-9)
    v = t.reference_adjoint(x)
    assert torch.allclose(t.hess_mean @ v, t.outer_grad(z), atol=1e-12)
    x_star, f_star = t.optimum()
    assert float(t.reference_hypergradient(x_star).norm()) <= 1e-10
    assert math.isclose(float(t.response(x_star)), f_star, rel_tol=1e-12)
    assert float(t.response(x)) > f_star
    eig = torch.linalg.eigvalsh(t.hess_mean)
    assert math.isclose(float(eig[0]), 0.1, rel_tol=1e-10) and math.isclose(float(eig[-1]), 1.0, rel_tol=1e-10)
    assert math.isclose(float(torch.linalg.matrix_norm(t.cross_mean, ord=2)), 1.0, rel_tol=1e-10)
    assert t.space.contains(x_star)


def test_quadratic_bilevel_per_example_terms_average_to_the_means():
    t = small(form="dense")
    d, q = t.d_inner, t.d_outer
    mean = t.inner_pack.mean(0)
    assert torch.allclose(mean[:d * d].view(d, d), t.hess_mean, atol=1e-13)
    assert torch.allclose(mean[d * d:d * d + q * d].view(q, d), t.cross_mean, atol=1e-13)
    assert torch.allclose(t.outer_pack.mean(0)[:d * d].view(d, d), t.outer_hess_mean, atol=1e-13)


def test_dense_and_factored_forms_are_one_problem():
    a, b = small(form="dense"), small(form="factored")
    gen = torch.Generator().manual_seed(0)
    w, v = torch.randn(5, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)
    x = torch.randn(2, generator=gen, dtype=torch.float64)
    idx, jdx = torch.tensor([3, 3, 17, 39]), torch.tensor([0, 19])
    for u, y in zip(a.inner_oracle_batch(w, x, idx, v), b.inner_oracle_batch(w, x, idx, v)):
        assert torch.allclose(u, y, rtol=1e-12, atol=1e-12)
    assert torch.allclose(a.outer_grad_batch(w, jdx), b.outer_grad_batch(w, jdx), rtol=1e-12, atol=1e-12)
    assert math.isclose(float(a.inner_loss_batch(w, x, idx)), float(b.inner_loss_batch(w, x, idx)), rel_tol=1e-12)


def test_quadratic_bilevel_refuses_bad_params():
    with pytest.raises(ValueError, match=r"parameter `mu` must be in \(0, L=1.0\], but got 2.0"):
        small(mu=2.0)
    with pytest.raises(ValueError, match="parameter `form` must be one of"):
        small(form="sparse")


# ------------------------------------------------------------- minibatch oracles of every tagged task
MINIBATCH_TASKS = sorted(n for n, c in TASKS.items() if "minibatch" in c.tags)


def _task(name):
    cls = TASKS.get(name)
    return cls(**cls.check_params)


@pytest.mark.parametrize("name", MINIBATCH_TASKS)
def test_batch_oracles_match_autograd_and_average_to_full(name):
    """Each task's own batch oracles equal the autograd defaults of :class:`Task`; over all examples, the full ones."""
    t = _task(name)
    gen = torch.Generator().manual_seed(1)
    theta = t.space.project(t.space.init_theta(dtype=t.dtype) + 0.3 * torch.randn(t.space.dim, generator=gen,
                                                                                   dtype=t.dtype))
    w = t.init_params() + 0.2 * torch.randn(t.n_params, generator=gen, dtype=t.dtype)
    v = torch.randn(t.n_params, generator=gen, dtype=t.dtype)
    idx = torch.randint(t.n_train, (7,), generator=gen)
    jdx = torch.randint(t.n_val, (5,), generator=gen)
    own = t.inner_oracle_batch(w, theta, idx, v)
    ref = Task.inner_oracle_batch(t, w, theta, idx, v)
    for what, a, b in zip(("grad", "Hv", "Jv"), own, ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), f"{name}: fused {what}"
    assert torch.allclose(t.inner_grad_batch(w, theta, idx), ref[0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(t.inner_hvp_batch(w, theta, idx, v), ref[1], rtol=1e-10, atol=1e-12)
    assert torch.allclose(t.inner_cross_batch(w, theta, idx, v), ref[2], rtol=1e-10, atol=1e-12)
    assert torch.allclose(t.inner_theta_grad_batch(w, theta, idx), Task.inner_theta_grad_batch(t, w, theta, idx),
                          rtol=1e-10, atol=1e-12)
    assert torch.allclose(t.outer_grad_batch(w, jdx), Task.outer_grad_batch(t, w, jdx), rtol=1e-10, atol=1e-12)
    every, every_val = torch.arange(t.n_train), torch.arange(t.n_val)
    lin = t.linearize(w, theta)
    g, hv, jv = t.inner_oracle_batch(w, theta, every, v)
    assert torch.allclose(g, t.inner_grad(w, theta), rtol=1e-10, atol=1e-12)
    assert torch.allclose(hv, lin.hvp(v), rtol=1e-10, atol=1e-12)
    assert torch.allclose(jv, lin.cross_vjp(v), rtol=1e-10, atol=1e-12)
    assert torch.allclose(t.outer_grad_batch(w, every_val), t.outer_grad(w), rtol=1e-10, atol=1e-12)
    assert math.isclose(float(t.outer_loss_batch(w, every_val)), float(t.outer_loss(w)), rel_tol=1e-12)


def test_autograd_defaults_match_finite_differences():
    """The generic defaults of :class:`Task` (used by tasks without closed forms) against central differences."""
    t = small()
    gen = torch.Generator().manual_seed(2)
    w, v = torch.randn(5, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)
    x = torch.randn(2, generator=gen, dtype=torch.float64)
    idx = torch.tensor([1, 4, 4, 30])
    g, hv, jv = Task.inner_oracle_batch(t, w, x, idx, v)
    h = 1e-6
    hv_fd = (Task.inner_grad_batch(t, w + h * v, x, idx) - Task.inner_grad_batch(t, w - h * v, x, idx)) / (2 * h)
    assert torch.allclose(hv, hv_fd, rtol=1e-7, atol=1e-8)
    jv_fd = fd_grad(lambda th: Task.inner_grad_batch(t, w, th, idx) @ v, x)
    assert torch.allclose(jv, jv_fd, rtol=1e-7, atol=1e-8)
    g_fd = torch.stack([(t.inner_loss_batch(w + h * e, x, idx) - t.inner_loss_batch(w - h * e, x, idx)) / (2 * h)
                        for e in torch.eye(5, dtype=torch.float64)])
    assert torch.allclose(g, g_fd, rtol=1e-7, atol=1e-8)


def test_tasks_without_validation_minibatches_say_so():
    ridge = TASKS.get("ridge")(n=20, p=3)
    with pytest.raises(NotImplementedError, match="no per-example validation losses"):
        ridge.n_val
    assert "minibatch" not in ridge.tags


# ------------------------------------------------------------- records
def test_stochastic_rows_carry_exact_metrics():
    t = small()
    rec = Recorder(t, Budget(steps=3), meta={})
    rec.start()
    TUNERS.get("soba")(batch_size=4, eval_every=5, step_size=0.1).run(t, rec, seed=0)
    assert len(rec.rows) == 3
    r0, r2 = rec.rows[0], rec.rows[2]
    for col in STOCHASTIC_COLUMNS:
        assert col in r0
    # v0's outer batch (4), then per iteration one fused call (4) and one outer gradient (4)
    assert r0["samples"] == 4 + 8 and r2["samples"] == 4 + 8 * 11
    assert math.isclose(r2["epochs"], 92 / 60)
    assert math.isclose(r0["inner_rel_distance"], 1.0)  # w0 = 0
    assert 0 < r0["v_rel_error"] < math.inf
    theta = torch.tensor(r2["theta"], dtype=torch.float64)
    ref = t.reference_hypergradient(theta)
    assert math.isclose(r2["grad_norm_sq"], float(ref @ ref), rel_tol=1e-12)
    assert r2["hvps"] == 11 and r2["grad_evals"] == 1 + 22 and r2["inner_steps"] == 10


def test_gradient_tuner_rows_lack_the_stochastic_columns():
    t = small()
    rec = Recorder(t, Budget(steps=2), meta={})
    rec.start()
    TUNERS.get("gradient")(method="exact", inner="exact").run(t, rec)
    assert not set(STOCHASTIC_COLUMNS) & set(rec.rows[0])


# ------------------------------------------------------------- validation and the kit
def test_suite_validation_refuses_stochastic_tuners_on_tasks_without_minibatches(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""
        name = "s"
        seeds = [0]
        [budget]
        steps = 2
        [[task]]
        name = "ridge"
        label = "rd"
        params = { n = 20, p = 3 }
        [[tuner]]
        name = "soba"
    """))
    with pytest.raises(SuiteError, match="tuner 'soba' .*needs task tag 'minibatch', which task 'rd'"):
        load_suite(str(path))


@pytest.mark.parametrize("name", STOCHASTIC)
def test_bad_knobs_are_refused(name):
    with pytest.raises(ValueError, match=r"parameter `step_size` must be > 0 \(a finite number\), but got -1"):
        TUNERS.get(name)(step_size=-1.0)
    with pytest.raises(ValueError, match="parameter `stepsize` must be one of the known parameters"):
        TUNERS.get(name)(stepsize=0.1)


def _kit_task(*, seed=0, narrow=False):
    return small(seed=seed, x_bound=0.05 if narrow else None)


def _kit_diverging(*, seed=0):
    t = small(seed=seed)
    t.outer_lin_mean = t.outer_lin_mean.clone()
    t.outer_lin_mean[0] = float("nan")
    t.outer_pack = t.outer_pack.clone()
    t.outer_pack[:, -1] = float("nan")
    return t


KIT = [c for c, _ in _tuner_checks.TUNER_CHECKS if c.__name__ != "check_tuner_requirements"]


@pytest.mark.parametrize("check", KIT, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", STOCHASTIC)
def test_kit_checks_on_a_minibatch_task(monkeypatch, name, check):
    """The conformance kit's tuner checks with its ridge task swapped for a quadratic_bilevel one."""
    monkeypatch.setattr(_tuner_checks, "conformance_task", _kit_task)
    monkeypatch.setattr(_tuner_checks, "diverging_task", _kit_diverging)
    cls = TUNERS.get(name)
    check((cls, {"batch_size": 4, "eval_every": 3}))
