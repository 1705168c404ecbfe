"""Environments: Gymnasium vector envs or envpool, Atari preprocessing, normalization state."""

from symrl.envs.atari import AtariSettings
from symrl.envs.make import is_image, make_env, make_vec_env, observation_shape, saves_env_state
from symrl.envs.normalize import ObsNormalizer, RewardNormalizer, RunningMeanStd

__all__ = ["AtariSettings", "is_image", "make_env", "make_vec_env", "observation_shape", "saves_env_state", "ObsNormalizer",
           "RewardNormalizer", "RunningMeanStd"]
