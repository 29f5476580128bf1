"""Devices, dtypes, generators and array/tensor conversion (no modelling here)."""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = [
    "DTYPES",
    "as_tensor",
    "intra_op_threads",
    "make_generator",
    "resolve_device",
    "seed_from_random_state",
    "to_numpy",
]

#: The training precisions by name (``training_dtype``, ``bench --dtype``).
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn a device specification into a :class:`torch.device`.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` or ``None`` choose CUDA when it is available and the CPU otherwise;
        any other value is passed to :class:`torch.device`.

    Returns
    -------
    torch.device
        The resolved device.

    Raises
    ------
    ValueError
        If the string names no device torch knows, a device that is not available here
        (CUDA or another backend), or ``"meta"``, which holds no data.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device torch knows: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available here.")
    if resolved.type == "meta":
        raise ValueError(
            f"device={device!r} holds no data (PyTorch's 'meta' device records only shapes), "
            "so nothing can be fitted or scored on it; use 'cpu', 'cuda' or 'auto'."
        )
    if resolved.type not in ("cpu", "cuda"):
        backend = getattr(torch, resolved.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise ValueError(
                f"device={device!r}: the {resolved.type} backend is not available here; use "
                "'cpu', 'cuda' or 'auto'."
            )
    return resolved


def seed_from_random_state(random_state: object) -> int:
    """Return a 64-bit seed for a scikit-learn style ``random_state``.

    Parameters
    ----------
    random_state : None, int or numpy.random.Generator or numpy.random.RandomState
        ``None`` draws fresh entropy (never the global numpy state); an integer in
        ``[0, 2**64)`` is used as it is (others are a ``ValueError``); a numpy
        generator or RandomState is advanced by one draw.

    Returns
    -------
    int
        A non-negative seed.

    Examples
    --------
    >>> seed_from_random_state(3)
    3
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= random_state < 2**64:  # torch's seeds are 64-bit
            raise ValueError(
                f"random_state must be an integer in [0, 2**64 - 1], got {random_state}."
            )
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    raise ValueError(
        f"random_state={random_state!r} cannot be used to seed a new random generator."
    )


def make_generator(random_state: object, device: torch.device | str = "cpu") -> torch.Generator:
    """Create a local :class:`torch.Generator` seeded from ``random_state``.

    The global torch and numpy generators are never touched.

    Parameters
    ----------
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState
        See :func:`seed_from_random_state`.
    device : torch.device or str, default="cpu"
        The device the generator draws on.

    Returns
    -------
    torch.Generator
        A seeded generator.

    Examples
    --------
    >>> g = make_generator(0)
    >>> torch.randn(2, generator=g).shape
    torch.Size([2])
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(seed_from_random_state(random_state))
    return generator


def as_tensor(
    array: object,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Convert an array-like to a contiguous tensor of the given dtype and device.

    Parameters
    ----------
    array : array-like
        Numeric data.
    dtype : torch.dtype, default=torch.float64
        Target dtype.
    device : torch.device or str, default="cpu"
        Target device.

    Returns
    -------
    torch.Tensor
        The converted tensor (no copy where none is needed).

    Examples
    --------
    >>> as_tensor([[1, 2]]).dtype
    torch.float64
    """
    if isinstance(array, torch.Tensor):
        return array.to(device=device, dtype=dtype).contiguous()
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch cannot wrap read-only memory (e.g. a memmap)
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype, device=device)


def to_numpy(tensor: torch.Tensor, dtype: type = np.float64) -> np.ndarray:
    """Detach a tensor, move it to the CPU and return a numpy array of ``dtype``.

    Parameters
    ----------
    tensor : torch.Tensor
        Any tensor.
    dtype : numpy dtype, default=numpy.float64
        Output dtype.

    Returns
    -------
    numpy.ndarray
        The values as a numpy array.

    Examples
    --------
    >>> to_numpy(torch.ones(2))
    array([1., 1.])
    """
    return tensor.detach().cpu().numpy().astype(dtype, copy=False)


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's number of intra-op CPU threads (``None`` leaves it alone).

    Small models train several times faster on one thread than on several: their
    operations are too small to split, and the hand-off between threads dominates
    (more so on a loaded machine). The previous setting is restored on exit.

    Parameters
    ----------
    n : int or None
        Number of threads inside the block.

    Examples
    --------
    >>> before = torch.get_num_threads()
    >>> with intra_op_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
