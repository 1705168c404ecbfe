"""The training device from a config's ``device`` choice, with a clear error when CUDA is missing."""

from __future__ import annotations

import torch

from symrl.config import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: got 'cuda' but torch sees no CUDA GPU; allowed here: cpu, auto")
    return torch.device(name)
