"""One control for the BLAS thread pools that NumPy and SciPy load (besides torch's own).

NumPy and SciPy each bundle an OpenBLAS whose pool defaults to one thread per core. On a
machine shared by several cells those threads spin-wait on each other: scipy's L-BFGS-B went
from ~0.2 ms to ~3 ms per iteration for 50 variables, and a NumPy gemv at p = 1000 ran 25x
slower. So the fork server of ``hpo-bench run`` caps them at one thread before it forks any
cell (cells do their heavy algebra in torch, with their own thread budget), and the oracle and
the L-BFGS outer loop run inside :func:`blas_threads` when used on their own.

Changing OpenBLAS's pool *inside* a forked cell process cost ~80 ms per cell (it re-allocates
its buffers), so :func:`blas_threads` changes nothing where the pools are already small enough.
``threadpool_limits`` rescans the loaded libraries on every call (~1 ms); the controller here is
built once per process, after importing SciPy's linear algebra so that SciPy's own BLAS is
among the controlled libraries.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

__all__ = ["blas_threads", "cap_blas_threads", "one_thread"]

_CONTROLLER: Any = None


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        import scipy.linalg  # noqa: F401 - loads SciPy's BLAS, so the controller sees it
        import scipy.optimize  # noqa: F401
        from threadpoolctl import ThreadpoolController

        # BLAS pools only: torch sets its own OpenMP pool (torch.set_num_threads)
        _CONTROLLER = ThreadpoolController().select(user_api="blas")
    return _CONTROLLER


def blas_threads(n: int):
    """Context manager: at most ``n`` threads in every BLAS pool of this process (no-op if already so)."""
    n = max(1, int(n))
    ctl = _controller()
    if all(lib.num_threads <= n for lib in ctl.lib_controllers):
        return contextlib.nullcontext()
    return ctl.limit(limits=n)


def cap_blas_threads(n: int = 1) -> None:
    """Cap every BLAS pool of this process at ``n`` threads for good (the fork server, before forking)."""
    _controller().limit(limits=max(1, int(n)))
    import numpy as np

    a = np.ones((64, 64))
    a @ a  # let OpenBLAS allocate its buffers here, once, not in every forked cell


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread and one thread per BLAS pool, restored afterwards.

    For small dense work (the oracle's L-BFGS-B, timed sweeps and benchmarks): on a busy machine,
    extra threads only wait on each other, and timings are stable this way.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with blas_threads(1):
            yield
    finally:
        torch.set_num_threads(n)
