"""User reward functions for tests/test_llm_rewards.py, imported by ``CallableReward`` as a user's would be."""

from __future__ import annotations


def completion_length(prompts: list[str], completions: list[str], references: list[str | None] | None) -> list[float]:
    return [float(len(c.split())) for c in completions]


def one_score_only(prompts: list[str], completions: list[str], references: list[str | None] | None) -> list[float]:
    return [1.0]


def not_numbers(prompts: list[str], completions: list[str], references: list[str | None] | None) -> list[str]:
    return ["high" for _ in completions]


NOT_A_FUNCTION = 3


def great_minus_awful(prompts: list[str], completions: list[str], references: list[str | None] | None) -> list[float]:
    """A trivially learnable reward for tests/test_llm_trainer.py: the synthetic corpus has both words."""
    return [float(c.count("great") - c.count("awful")) for c in completions]


def prompt_characters(prompts: list[str], completions: list[str], references: list[str | None] | None) -> list[float]:
    """The length of the prompt text the reward reads, for tests/test_llm_trainer.py."""
    return [float(len(p)) for p in prompts]


CALLS = {"nan_from_third_call": 0}


def nan_from_third_call(prompts: list[str], completions: list[str], references: list[str | None] | None) -> list[float]:
    """Finite rewards for two calls (iterations), then NaN: a run that diverges after good checkpoints."""
    CALLS["nan_from_third_call"] += 1
    value = float("nan") if CALLS["nan_from_third_call"] >= 3 else 1.0
    return [value for _ in completions]
