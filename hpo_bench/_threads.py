"""One control for the BLAS / OpenMP thread pools that NumPy and SciPy load (besides torch's own).

NumPy and SciPy each bundle an OpenBLAS whose pool defaults to one thread per core. On a
machine shared by several cells those threads spin-wait on each other: scipy's L-BFGS-B went
from ~0.2 ms to ~3 ms per iteration for 50 variables, and a NumPy gemv at p = 1000 ran 25x
slower. Cells, the oracle and the L-BFGS outer loop therefore run inside :func:`blas_threads`.

``threadpoolctl.threadpool_limits`` rescans the loaded libraries on every call (~1 ms); the
controller here is built once per process (the fork server builds it, after importing SciPy's
linear algebra so that SciPy's own BLAS is among the controlled libraries), so a limit costs
tens of microseconds.
"""

from __future__ import annotations

from typing import Any

__all__ = ["blas_threads"]

_CONTROLLER: Any = None


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        import scipy.linalg  # noqa: F401 - loads SciPy's BLAS, so the controller sees it
        import scipy.optimize  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def blas_threads(n: int):
    """Context manager: at most ``n`` threads in every BLAS / OpenMP pool of this process."""
    return _controller().limit(limits=max(1, int(n)))
