"""Image-shaped rows: the ``image_shape`` parameter of ``EBFlowDensity``, checked and resolved.

Each row of ``X`` is one image flattened in C·H·W order (row-major, as
``images.reshape(len(images), -1)`` flattens an array of shape ``(n, C, H, W)``).
``image_shape=(C, H, W)`` says how to read it back; one entry may be ``-1``, inferred from
the number of features as ``numpy.reshape`` infers it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

__all__ = ["resolve_image_shape"]

_ROWS = "each row of X must be one image flattened in C·H·W order"


def resolve_image_shape(
    image_shape: Sequence[int] | None, n_features: int
) -> tuple[int, int, int] | None:
    """Return ``image_shape`` with any ``-1`` inferred from ``n_features``, checked.

    Parameters
    ----------
    image_shape : tuple of int or None
        ``(C, H, W)``: positive sizes, at most one of them ``-1``.
    n_features : int
        The number of features of ``X`` (``C·H·W``).

    Returns
    -------
    tuple of int or None
        The image shape (``None`` for ``None``).

    Raises
    ------
    ValueError
        If ``image_shape`` is not three positive integers (one may be ``-1``) or does not
        hold ``n_features`` values.

    Examples
    --------
    >>> resolve_image_shape((1, 8, 8), 64), resolve_image_shape((3, -1, 4), 48)
    ((1, 8, 8), (3, 4, 4))
    >>> resolve_image_shape((1, 8, 8), 10)
    Traceback (most recent call last):
    ...
    ValueError: image_shape=(1, 8, 8) holds 64 values per image, but X has 10 features; ...
    """
    if image_shape is None:
        return None
    sizes = tuple(image_shape)
    valid = all(isinstance(s, Integral) and not isinstance(s, bool) for s in sizes)
    if len(sizes) != 3 or not valid or any(s < 1 and s != -1 for s in sizes) or sizes.count(-1) > 1:
        raise ValueError(
            f"image_shape must be (C, H, W): three positive integers, at most one of them -1 "
            f"(inferred from the number of features), got {image_shape!r}."
        )
    sizes = tuple(int(s) for s in sizes)
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_features % known:
            raise ValueError(
                f"image_shape={sizes} needs a number of features divisible by {known}, but X "
                f"has {n_features} features; {_ROWS}."
            )
        sizes = tuple(n_features // known if s == -1 else s for s in sizes)
    elif known != n_features:
        raise ValueError(
            f"image_shape={sizes} holds {known} values per image, but X has {n_features} "
            f"features; {_ROWS}."
        )
    return sizes  # type: ignore[return-value]
