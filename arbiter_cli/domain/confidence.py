"""The ``confidence`` of a Thompson decision, computed rather than sampled (SPEC §3.4, §13.1).

Candidate i scores ``S_i = w·X_i + c_i`` with ``X_i ~ Beta(a_i, b_i)`` independent, ``w`` the
performance weight and ``c_i`` its load, fit and latency parts. The confidence is the
probability that the chosen candidate (index 0) scores highest:

    P = ∫ f_0(x) · Π_{j≠0} F_j(x + (c_0 − c_j)/w) dx

where ``f`` and ``F`` are the Beta densities and distribution functions. §13.1 allows any
method within ±0.02 of a 10 000-draw estimate; ``tests/unit/test_confidence.py`` checks that
bound on hundreds of random posteriors against 10 000 draws.

numpy has no incomplete beta function, so each ``F_j`` is the running sum of its density on a
grid over its own mass (mean ± 10 standard deviations, within [0, 1]), normalised to end at 1,
and read between grid points by linear interpolation. The density is evaluated at cell
midpoints, where it is finite for any a, b > 0. The normalisation absorbs the Beta function,
so no log-gamma is needed. Deterministic: no random draws, so the generator's stream is the
same with or without a confidence.

A posterior's grid depends on its (a, b) only, and an arm's posterior changes only with its
outcomes, so the grids are kept (``GRIDS`` of them, the oldest dropped first) and a decision
computes only those it has not seen: the same numbers, without most of the numpy calls that
were most of a decision's CPU at 100 agents (issue 13).
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

CELLS = 48  # grid cells per candidate: about 0.4 standard deviation each
SPREAD = 10.0  # the grid covers mean ± SPREAD standard deviations
GRIDS = 512  # posteriors whose grid is kept: about 1.6 KB each
# A kept grid is one row: lo, width, total mass, the midpoints and the cells' masses (CELLS
# each; the chosen candidate's side), then the share of the mass left of each cell and each
# cell's share, with one cell more past the end (left of it 1, in it 0) so that a point at the
# grid's end needs no clamp (CELLS + 1 each; the other candidates' side).
LO, WIDTH, TOTAL, MIDS = 0, 1, 2, 3
MASS = MIDS + CELLS
BELOW = MASS + CELLS
SHARE = BELOW + CELLS + 1
STRIDE = SHARE + CELLS + 1

_grids: dict[tuple[float, float], npt.NDArray[np.float64]] = {}
_grids_lock = threading.Lock()  # the API server routes on several threads


def win_probability(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64],
                    base: npt.NDArray[np.float64], weight: float) -> float:
    """P(candidate 0 scores highest) for scores ``weight·Beta(a_i, b_i) + base_i``."""
    import numpy as np

    if a.size == 1:
        return 1.0
    if weight <= 0.0:  # no draw moves a score: the fixed parts decide, ties to the first
        return 1.0 if bool(base[0] >= base[1:].max()) else 0.0
    grid = np.array(_rows(a, b))
    first = grid[0]
    # The others' cdfs where the chosen one's midpoints x put them, x + (c_0 − c_j)/w, in
    # cells of their own grids: a cell's mass grows linearly across it.
    at = ((first[MIDS:MASS] + ((base[0] - base[1:]) / weight - grid[1:, LO])[:, None])
          / grid[1:, WIDTH, None])
    np.maximum(at, 0.0, out=at)
    np.minimum(at, float(CELLS), out=at)
    cell = at.astype(np.intp)
    at -= cell  # now the part of its cell left of each point
    cell += _offsets(a.size)
    flat = grid.ravel()
    beaten = flat[cell + (SHARE - BELOW)]
    beaten *= at
    beaten += flat[cell]
    win = float(first[MASS:BELOW] @ beaten.prod(axis=0)) / float(first[TOTAL])
    return min(max(win, 0.0), 1.0)


def _rows(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
          ) -> list[npt.NDArray[np.float64]]:
    """The grid row of each posterior, computing the missing ones together."""
    keys = list(zip(a.tolist(), b.tolist(), strict=True))
    rows = [_grids.get(key) for key in keys]
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:
        made = _make(a[missing], b[missing])
        with _grids_lock:
            for i, row in zip(missing, made, strict=True):
                rows[i] = _grids[keys[i]] = row
            while len(_grids) > GRIDS:  # the oldest first
                del _grids[next(iter(_grids))]
    return rows  # type: ignore[return-value]


def _make(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
          ) -> list[npt.NDArray[np.float64]]:
    """Grid rows (see STRIDE) of the posteriors Beta(a_i, b_i), each its own read-only array
    (a kept row does not keep its neighbours alive)."""
    import numpy as np

    out = np.zeros((a.size, STRIDE))  # zero: left of the first cell, and in the one past the end
    mean = a / (a + b)
    sd = np.sqrt(mean * (1.0 - mean) / (a + b + 1.0))
    lo = np.maximum(mean - SPREAD * sd, 0.0)
    width = (np.minimum(mean + SPREAD * sd, 1.0) - lo) / CELLS
    mids = lo[:, None] + width[:, None] * _half()
    log_pdf = (a - 1.0)[:, None] * np.log(mids) + (b - 1.0)[:, None] * np.log1p(-mids)
    mass = np.exp(log_pdf - log_pdf.max(axis=1, keepdims=True))
    below = np.cumsum(mass, axis=1)
    total = below[:, -1]
    out[:, LO], out[:, WIDTH], out[:, TOTAL] = lo, width, total
    out[:, MIDS:MASS], out[:, MASS:BELOW] = mids, mass
    out[:, SHARE - 1] = 1.0  # left of the cell past the end: all of it
    out[:, BELOW + 1:SHARE - 1] = below[:, :-1] / total[:, None]  # left of cells 1 … CELLS − 1
    out[:, SHARE:STRIDE - 1] = mass / total[:, None]
    rows = [row.copy() for row in out]
    for row in rows:
        row.flags.writeable = False
    return rows


@functools.cache
def _half() -> npt.NDArray[np.float64]:
    """The midpoints 0.5, 1.5, … in cell units."""
    import numpy as np

    return np.arange(CELLS, dtype=np.float64) + 0.5


@functools.cache
def _offsets(size: int) -> npt.NDArray[np.intp]:
    """The flat offsets of the cdf parts of grid rows 1 … size − 1, as a column."""
    import numpy as np

    return (np.arange(1, size) * STRIDE + BELOW)[:, None]
