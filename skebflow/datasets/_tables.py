"""The small tables bundled with scikit-learn, prepared for density estimation.

:func:`load_digits_integer` returns the 1,797 8×8 digits as integer-valued pixels in
``[0, 16]``, for dequantized density estimation. :func:`load_table` returns one of the
tables of :data:`TABLE_DATASETS` (digits, breast cancer, wine, iris, diabetes), shuffled,
split and *dequantized*: each column is recorded on a grid (integer pixels, iris in steps
of 0.1 cm, wine's magnesium in whole mg/l, diabetes' two-valued sex, ...), so the raw
values have no density (iris even repeats a row) and a model could earn an unbounded
likelihood by collapsing onto the grid. Uniform noise of one grid step makes the values
continuous; the density of the dequantized data is what every model is compared on.

Nothing is downloaded. Randomness only comes from ``random_state`` through
:func:`numpy.random.default_rng`; the global NumPy generator is never used.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["TABLE_DATASETS", "load_digits_integer", "load_table"]

#: The small tables of :func:`load_table`, all bundled with scikit-learn (no download).
TABLE_DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "wine", "iris", "diabetes")


def _n_test(test_fraction: float, n_rows: int) -> int:
    """Size of the test split, ``ceil(test_fraction * n_rows)``, validated."""
    if (
        not isinstance(test_fraction, numbers.Real)
        or not math.isfinite(test_fraction)
        or not 0 < test_fraction < 1
    ):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    n_test = math.ceil(test_fraction * n_rows)
    if not 0 < n_test < n_rows:
        raise ValueError(f"test_fraction={test_fraction!r} leaves an empty split.")
    return n_test


def load_digits_integer(
    *,
    random_state: int | np.random.Generator | None = None,
    test_fraction: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's 8×8 digits as integer-valued pixels, shuffled and split.

    The 1,797 images bundled with scikit-learn (no download) have 64 pixels each with
    integer values in ``[0, 16]``. For density estimation dequantize them, e.g. add
    ``U[0, 1)`` noise, which gives a density on ``[0, 17)^64``.

    Parameters
    ----------
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator for the shuffle, passed to :func:`numpy.random.default_rng`.
    test_fraction : float, default=0.2
        Fraction of the images in the test set, in ``(0, 1)``; the test set has
        ``ceil(test_fraction * 1797)`` images.

    Returns
    -------
    train : ndarray of shape (n_train, 64), dtype float64
    test : ndarray of shape (n_test, 64), dtype float64
        ``n_train + n_test == 1797``.

    Raises
    ------
    ValueError
        If ``test_fraction`` is not in ``(0, 1)`` or leaves an empty split.

    Examples
    --------
    >>> from skebflow.datasets._tables import load_digits_integer
    >>> train, test = load_digits_integer(random_state=0)
    >>> train.shape, test.shape
    ((1437, 64), (360, 64))
    >>> float(train.min()), float(train.max())
    (0.0, 16.0)
    """
    from sklearn.datasets import load_digits

    data = np.asarray(load_digits().data, dtype=np.float64)
    n_test = _n_test(test_fraction, len(data))
    data = data[np.random.default_rng(random_state).permutation(len(data))]
    return data[n_test:].copy(), data[:n_test].copy()


def _table_columns(name: str) -> tuple[np.ndarray, list[str]]:
    """Return the raw feature matrix of a bundled table and its column names."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    data = np.asarray(bunch.data, dtype=np.float64)
    names = [str(n) for n in bunch.feature_names]
    if name == "breast_cancer":
        # 13 tumours have concavity exactly 0 in the six "concav*" columns: a point mass,
        # on which a continuous density could gain an unbounded likelihood. Dropped.
        keep = [j for j, n in enumerate(names) if "concav" not in n]
        data, names = data[:, keep], [names[j] for j in keep]
    return data, names


def _grid_steps(data: np.ndarray) -> np.ndarray:
    """Per column, the smallest gap between distinct values (1 for a constant column)."""
    steps = np.ones(data.shape[1])
    for j in range(data.shape[1]):
        gaps = np.diff(np.unique(data[:, j]))
        if len(gaps):
            steps[j] = gaps.min()
    return steps


def load_table(
    name: str,
    *,
    random_state: int | np.random.Generator | None = None,
    test_fraction: float = 0.25,
    dequantize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a small scikit-learn table for density estimation: shuffled, split, dequantized.

    The features (never the targets) of one of scikit-learn's bundled tables; nothing is
    downloaded. Each column is recorded on a grid, so by default uniform noise
    ``U[0, step)`` is added, with ``step`` the smallest gap between the column's distinct
    values over the whole table (1 for integer pixels and for the three always-blank
    pixels of digits; 0.1 for iris; ...): the result has a density, the density of the
    dequantized data. Per table:

    * ``"digits"``: 1,797 × 64 pixels in ``[0, 16]`` (dequantized: ``[0, 17)``), as in
      :func:`load_digits_integer`;
    * ``"breast_cancer"``: 569 × 24; the six "concavity" and "concave points" columns
      are dropped (13 rows have exactly 0 in all six: a point mass); ``log1p`` of every
      column, after the dequantization noise;
    * ``"wine"``: 178 × 13; ``"iris"``: 150 × 4; ``"diabetes"``: 442 × 10 (scaled as by
      scikit-learn; its sex column takes two values one step apart, so it becomes
      uniform on two adjacent cells).

    Parameters
    ----------
    name : str
        One of :data:`TABLE_DATASETS`.
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator of the shuffle and then of the noise, passed to
        :func:`numpy.random.default_rng`.
    test_fraction : float, default=0.25
        Fraction of the rows in the test set, in ``(0, 1)``; the test set has
        ``ceil(test_fraction * n_rows)`` rows.
    dequantize : bool, default=True
        Add the uniform noise; ``False`` returns the recorded values (``log1p`` applied
        for breast cancer).

    Returns
    -------
    train : ndarray of shape (n_train, n_features), dtype float64
    test : ndarray of shape (n_test, n_features), dtype float64

    Raises
    ------
    ValueError
        For an unknown name, or if ``test_fraction`` is not in ``(0, 1)`` or leaves an
        empty split.

    Examples
    --------
    >>> from skebflow.datasets._tables import load_table
    >>> train, test = load_table("iris", random_state=0)
    >>> train.shape, test.shape
    ((112, 4), (38, 4))
    >>> raw, _ = load_table("iris", random_state=0, dequantize=False)
    >>> bool(((train - raw >= 0) & (train - raw < 0.1 + 1e-9)).all())
    True
    """
    if name not in TABLE_DATASETS:
        raise ValueError(f"Unknown table {name!r}; valid names are {list(TABLE_DATASETS)}.")
    data, _ = _table_columns(name)
    n_test = _n_test(test_fraction, len(data))
    rng = np.random.default_rng(random_state)
    steps = _grid_steps(data)
    data = data[rng.permutation(len(data))]
    if dequantize:
        data = data + steps * rng.random(data.shape)
    if name == "breast_cancer":
        data = np.log1p(data)
    return data[n_test:].copy(), data[:n_test].copy()
