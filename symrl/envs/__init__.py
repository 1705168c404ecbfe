"""Environments: Gymnasium vector envs and the normalization wrappers' state."""

from symrl.envs.make import make_env, make_vec_env, observation_dim
from symrl.envs.normalize import ObsNormalizer, RewardNormalizer, RunningMeanStd

__all__ = ["make_env", "make_vec_env", "observation_dim", "ObsNormalizer", "RewardNormalizer", "RunningMeanStd"]
