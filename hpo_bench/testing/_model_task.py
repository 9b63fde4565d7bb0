"""``ModelTask``: a task from a torch model and two loss functions (for users' own problems)."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch.func import functional_call

from ..core.solvers import SolveCache, newton_or_raise
from ..core.space import Space
from ..core.task import Linearization, Task

__all__ = ["ModelTask", "BoundModel"]


class BoundModel:
    """A model with its parameters taken from one flat vector ``w`` (differentiable in ``w``).

    Attributes:
        flat: the flat parameter vector ``w``.
        params: ``{name: tensor}`` views of ``w`` shaped like the model's parameters.

    Calling it runs the model's forward pass with those parameters
    (:func:`torch.func.functional_call`), so a loss written with it is differentiable in ``w``.
    """

    def __init__(self, module: torch.nn.Module, shapes: list[tuple[str, torch.Size]], w: torch.Tensor) -> None:
        self.module = module
        self.flat = w
        self.params: dict[str, torch.Tensor] = {}
        start = 0
        for name, shape in shapes:
            size = math.prod(shape)
            self.params[name] = w[start:start + size].reshape(shape)
            start += size

    def __call__(self, *args, **kwargs):
        return functional_call(self.module, self.params, args, kwargs)


class ModelTask(Task):
    """A bilevel task from a torch model and two losses; reference by dense implicit differentiation.

    Example (ridge with one penalty per weight, as a user would write it)::

        x, y = torch.randn(40, 3), torch.randn(40)
        task = ModelTask(
            model=lambda: torch.nn.Linear(3, 1),      # built under torch.manual_seed(seed)
            inner_loss=lambda m, hp: ((m(x[:30]).squeeze(-1) - y[:30]) ** 2).mean()
                                     + (hp["lam"] * m.flat ** 2).sum(),
            outer_loss=lambda m: ((m(x[30:]).squeeze(-1) - y[30:]) ** 2).mean(),
            space=Space((Block("lam", kind="per_weight", size=4, low=1e-4, high=1e2, init=0.1),)),
        )

    Args:
        model: a ``torch.nn.Module``, or a zero-argument callable that builds one (it is then
            called under ``torch.manual_seed(seed)``, so the initial parameters are
            deterministic by seed). A copy is moved to ``dtype``/``device``; its parameters at
            construction are ``init_params()`` (flattened in ``named_parameters()`` order;
            buffers stay fixed).
        inner_loss: ``(m, hp) -> scalar``: training objective; ``m`` is a :class:`BoundModel`
            (call it like the model; ``m.flat`` is ``w``, ``m.params`` the named views), ``hp``
            maps each block of ``space`` to its *natural* values (``exp(theta)`` for log blocks).
        outer_loss: ``(m) -> scalar``: validation loss.
        space: the hyperparameter space.
        test_loss: ``(m) -> scalar`` (default: ``outer_loss``).
        name: shown in reports (default ``"model_task"``).
        gtol: the reference solve stops at ``||grad_w inner|| <= gtol`` (+ 2 polishing steps).

    The reference inner solve is damped Newton with the dense autograd Hessian from
    ``init_params()`` (:func:`hpo_bench.core.solvers.newton`), so keep ``n_params`` to a few
    thousand; for a non-convex loss ``solve`` returns the minimum Newton reaches from there.
    The reference hypergradient is dense implicit differentiation at that solution
    (:func:`hpo_bench.core.task.implicit_reference`).
    """

    name = "model_task"
    tags = frozenset({"reference:implicit-dense"})

    def __init__(self, *, model: torch.nn.Module, inner_loss: Callable[[BoundModel, dict], torch.Tensor],
                 outer_loss: Callable[[BoundModel], torch.Tensor], space: Space,
                 test_loss: Callable[[BoundModel], torch.Tensor] | None = None, name: str | None = None,
                 gtol: float = 1e-12, seed: int = 0, dtype: Any = "float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        if not isinstance(model, torch.nn.Module) and callable(model):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = model()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"ModelTask: `model` must be a torch.nn.Module or a callable returning one, "
                            f"but got {type(model).__name__}")
        if not isinstance(space, Space):
            raise TypeError(f"ModelTask: `space` must be a hpo_bench.core.space.Space, but got {type(space).__name__}")
        for key, fn in (("inner_loss", inner_loss), ("outer_loss", outer_loss)):
            if not callable(fn):
                raise TypeError(f"ModelTask: `{key}` must be callable, but got {fn!r}")
        if name is not None:
            self.name = name
        self.module = copy.deepcopy(model).to(dtype=self.dtype, device=self.device)
        named = [(n, p) for n, p in self.module.named_parameters()]
        if not named:
            raise ValueError("ModelTask: `model` has no parameters")
        self._shapes = [(n, p.shape) for n, p in named]
        self._w0 = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        self._space = space
        self._inner, self._outer = inner_loss, outer_loss
        self._test = test_loss or outer_loss
        self.gtol = float(gtol)
        self._cache = SolveCache()
        self.params = {"model": type(model).__name__, "n_params": int(self._w0.numel()), "name": self.name,
                       "space": space.describe()}

    def bind(self, w: torch.Tensor) -> BoundModel:
        """The model with parameters ``w``."""
        return BoundModel(self.module, self._shapes, w)

    def hyperparameters(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{block: natural values}`` (differentiable in ``theta``)."""
        return self.space.split(self.space.to_natural(theta))

    # -------------------------------------------------------------- contract
    @property
    def space(self) -> Space:
        return self._space

    @property
    def n_params(self) -> int:
        return int(self._w0.numel())

    def init_params(self) -> torch.Tensor:
        return self._w0.clone()

    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self._inner(self.bind(w), self.hyperparameters(theta))

    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self._outer(self.bind(w))

    def test_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self._test(self.bind(w))

    def _solve(self, theta: torch.Tensor) -> torch.Tensor:
        return newton_or_raise(self.name, lambda v: self.inner_loss(v, theta), lambda v: self.inner_grad(v, theta),
                               lambda v: Linearization(self, v, theta).hessian(), self.init_params(), gtol=self.gtol)

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """Damped Newton from ``init_params()`` to ``||grad|| <= gtol`` (memoised on ``theta``)."""
        return self._cache.get(theta, self._solve)
