"""Leave a training run exactly as it was: random streams and train/eval flags.

A monitor runs in the middle of training. Whatever it does there must be invisible to the run:

- :func:`preserved_rng` saves and restores Python's ``random``, NumPy's legacy global
  generator, torch's CPU generator and (only when CUDA is already initialised, so that
  monitoring never initialises it) every CUDA device's generator. An eval-mode forward
  normally draws no random numbers, but an adapter or model might (a stray ``dropout`` call with
  ``training=True``, a random crop), and a run resumed from a checkpoint must not depend on
  whether the monitor was on.
- :func:`preserved_modes` records the ``training`` flag of *every* submodule (a training loop
  may keep a frozen feature extractor in eval mode inside a model in train mode) and sets each
  one back afterwards; ``module.train(flag)`` on the root alone would overwrite them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["preserved_modes", "preserved_rng"]


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the Python, NumPy and torch (CPU and initialised CUDA) random states on exit."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    cpu_state = torch.random.get_rng_state()
    cuda_states = (torch.cuda.get_rng_state_all()
                   if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


@contextmanager
def preserved_modes(roots: Iterable[torch.nn.Module]) -> Iterator[None]:
    """Put ``roots`` in eval mode for the block, then give every submodule its own flag back."""
    seen: set[int] = set()
    flags: list[tuple[torch.nn.Module, bool]] = []
    root_list = list(roots)
    for root in root_list:
        for module in root.modules():
            if id(module) not in seen:
                seen.add(id(module))
                flags.append((module, module.training))
    try:
        for root in root_list:
            root.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag
