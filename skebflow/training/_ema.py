"""Exponential moving average of a module's weights (the model that training keeps).

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267 (EMA of the weights).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied).

    Parameters
    ----------
    module : torch.nn.Module
        The module being trained.
    decay : float
        Target decay; the effective decay at update ``n >= 1`` is
        ``min(decay, (1 + n) / (10 + n))``; the first update copies the weights.

    Examples
    --------
    >>> net = torch.nn.Linear(2, 2)
    >>> ema = EMA(net, decay=0.9)
    >>> ema.update()
    >>> isinstance(ema.module, torch.nn.Linear)
    True
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.source = module
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.decay = float(decay)
        self.n_updates = 0
        self._source_params = list(module.parameters())
        self._params = list(self.module.parameters())

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (one fused call)."""
        # The first update copies the weights (the average starts where training does).
        n = self.n_updates
        decay = 0.0 if n == 0 else min(self.decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(self._params, self._source_params, 1.0 - decay)
        for own, theirs in zip(self.module.buffers(), self.source.buffers(), strict=True):
            own.copy_(theirs)
        self.n_updates += 1

    def state_dict(self) -> dict:
        """Return the averaged weights and the update count."""
        return {"module": self.module.state_dict(), "n_updates": self.n_updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.module.load_state_dict(state["module"])
        self.n_updates = int(state["n_updates"])
