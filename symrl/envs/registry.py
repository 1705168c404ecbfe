"""Making every environment id a user may pass known to Gymnasium's registry.

``module:EnvId`` (Gymnasium's own syntax) imports ``module`` first, so custom environments
register themselves; Atari ids register the ALE environments shipped by ``ale-py``.
"""

from __future__ import annotations

import importlib

import gymnasium as gym


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


def ensure_registered(env_id: str) -> str:
    """Import what registers ``env_id``; returns the id without its ``module:`` prefix.

    Raises ``ModuleNotFoundError`` or ``ImportError`` with a message naming what to install.
    """
    module, sep, name = env_id.rpartition(":")
    if sep:
        importlib.import_module(module)
    else:
        name = env_id
    if is_atari(name) and name not in gym.registry:
        try:
            import ale_py
        except ImportError as err:
            raise ImportError(f"{name} needs the Atari extra: pip install 'symrl[atari]' ({err})") from None
        gym.register_envs(ale_py)
    return name
