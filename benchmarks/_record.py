"""What every benchmark records about where it ran: the machine, torch's thread count and the
load average before and after (these machines are shared; a timing without its load means
little)."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def environment(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """The machine, torch threads, and the load average at ``load_before`` and now."""
    return {
        "torch_threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
