"""rliable's statistics against hand-computed values, and the bootstrap against exact enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from symrl.report.atari import SCORES, atari_game, human_normalized
from symrl.report.stats import (bootstrap_ci, bootstrap_distribution, iqm, mean, median, optimality_gap,
                                percentile_interval, pointwise_mean_ci, probability_of_improvement,
                                probability_of_improvement_ci, ragged_matrix, stratified_resample)

# 4 runs × 3 tasks; task means 1.5, 265, 4
SCORES_4x3 = np.array([[0, 10, 4], [1, 20, 4], [2, 30, 4], [3, 1000, 4]], dtype=float)


def test_iqm_trims_a_quarter_of_all_scores_from_each_end():
    # sorted: 0 1 2 | 3 4 4 4 4 10 | 20 30 1000 -> mean of the middle six = 29 / 6
    assert iqm(SCORES_4x3) == pytest.approx(29 / 6)
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)  # n=5: floor(5/4)=1 cut each end
    assert iqm([1, 2, 9]) == pytest.approx(4.0)  # n=3: nothing to cut, as scipy.stats.trim_mean


def test_mean_and_median_are_over_task_means():
    assert mean(SCORES_4x3) == pytest.approx((1.5 + 265 + 4) / 3)
    assert median(SCORES_4x3) == pytest.approx(4.0)


def test_optimality_gap_counts_only_the_shortfall_below_gamma():
    scores = np.array([[0.2, 1.5], [0.6, 0.9]])
    assert optimality_gap(scores) == pytest.approx(1 - (0.2 + 1 + 0.6 + 0.9) / 4)
    assert optimality_gap(scores, gamma=0.5) == pytest.approx(0.5 - (0.2 + 0.5 + 0.5 + 0.5) / 4)


def test_unequal_runs_per_task_are_nan_padded():
    scores = ragged_matrix([np.array([1.0, 2, 3]), np.array([10.0, 20])])
    assert np.isnan(scores[2, 1])
    assert mean(scores) == pytest.approx((2 + 15) / 2)  # tasks weigh equally
    assert iqm(scores) == pytest.approx((2 + 3 + 10) / 3)  # pooled 1 2 3 10 20, one cut each end


def test_probability_of_improvement_is_the_mann_whitney_share_averaged_over_tasks():
    x = np.array([[3, 1], [5, 2]], dtype=float)
    y = np.array([[3, 0], [4, 0]], dtype=float)
    # task 1: 3v3 tie ½, 3v4 0, 5v3 1, 5v4 1 -> 2.5/4; task 2: every pair a win -> 1
    assert probability_of_improvement(x, y) == pytest.approx((2.5 / 4 + 1) / 2)
    assert probability_of_improvement(x, y) + probability_of_improvement(y, x) == pytest.approx(1.0)
    ragged = ragged_matrix([np.array([3.0, 5, 6]), np.array([1.0, 2])])
    # task 1: 3v3 ½, 3v4 0, 5v3 1, 5v4 1, 6v3 1, 6v4 1 -> 4.5/6
    assert probability_of_improvement(ragged, y) == pytest.approx((4.5 / 6 + 1) / 2)


def test_a_task_with_identical_runs_gives_a_zero_width_interval():
    assert bootstrap_ci(np.array([[3.0, 7], [3, 7], [3, 7]]), mean) == pytest.approx((5, 5, 5))
    tie = probability_of_improvement_ci(np.full((3, 2), 1.0), np.full((2, 2), 1.0))
    assert (tie.point, tie.lo, tie.hi) == (0.5, 0.5, 0.5)
    dominates = probability_of_improvement_ci(np.array([[5.0], [6]]), np.array([[1.0], [2]]))
    assert (dominates.point, dominates.lo, dominates.hi) == (1.0, 1.0, 1.0)


def _exact_distribution(scores: np.ndarray, aggregate) -> dict[float, float]:
    """Every stratified resample, each task's runs drawn with replacement from its own runs: value → probability."""
    runs, tasks = scores.shape
    per_task = list(itertools.product(range(runs), repeat=runs))
    probabilities: dict[float, float] = {}
    for choice in itertools.product(per_task, repeat=tasks):
        resample = np.array([[scores[choice[t][i], t] for t in range(tasks)] for i in range(runs)])
        value = round(float(aggregate(resample)), 9)
        probabilities[value] = probabilities.get(value, 0.0) + 1 / len(per_task) ** tasks
    return probabilities


def test_bootstrap_resamples_within_each_task_independently():
    # Stratified: each task mean is 0, ½, 1 w.p. ¼ ½ ¼, so the mean of two tasks is 0 w.p. 1/16.
    # Resampling whole rows (0, 0) and (1, 1) instead would give 0 w.p. ¼.
    scores = np.array([[0.0, 0], [1, 1]])
    exact = _exact_distribution(scores, mean)
    assert exact == pytest.approx({0.0: 1 / 16, 0.25: 4 / 16, 0.5: 6 / 16, 0.75: 4 / 16, 1.0: 1 / 16})
    draws = bootstrap_distribution(scores, mean, reps=20_000, seed=1)
    for value, p in exact.items():
        share = np.mean(np.isclose(draws, value))
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / draws.size), (value, share, p)


def test_bootstrap_interval_is_the_exact_percentile_of_the_enumerated_distribution():
    scores = np.array([[0.0, 0], [1, 1]])
    # exact CDF: 0 -> 1/16, 0.25 -> 5/16, 0.5 -> 11/16, 0.75 -> 15/16, 1 -> 1: an 80% interval
    # (10th and 90th percentiles) is [0.25, 0.75]; a 95% one is [0, 1]
    assert bootstrap_ci(scores, mean, confidence=0.8) == pytest.approx((0.5, 0.25, 0.75))
    assert bootstrap_ci(scores, mean, confidence=0.95) == pytest.approx((0.5, 0.0, 1.0))


def test_bootstrap_interval_of_iqm_matches_brute_force_enumeration():
    scores = np.array([[8.0, 0], [2, 4], [6, 2]])  # 27 resamples per task, 729 in all
    exact = _exact_distribution(scores, iqm)
    values = np.array(sorted(exact))
    cdf = np.cumsum([exact[v] for v in values])
    lo_exact, hi_exact = values[np.searchsorted(cdf, 0.025)], values[np.searchsorted(cdf, 0.975)]
    # the 2.5% and 97.5% levels fall well inside one atom each (not the extremes), so 20,000 draws land on them
    assert min(abs(cdf - 0.025).min(), abs(cdf - 0.975).min()) > 0.015
    assert (lo_exact, hi_exact) == (1.5, 5.5) and values[0] < 1.5 and values[-1] > 5.5
    ci = bootstrap_ci(scores, iqm, reps=20_000, seed=3)
    assert (ci.lo, ci.hi) == pytest.approx((lo_exact, hi_exact))
    assert ci.lo <= ci.point <= ci.hi


def test_interval_is_the_percentile_of_the_seeded_bootstrap_distribution():
    scores = np.random.default_rng(0).normal(size=(5, 4))
    draws = bootstrap_distribution(scores, iqm, reps=2000, seed=7)
    ci = bootstrap_ci(scores, iqm, reps=2000, seed=7)
    assert (ci.lo, ci.hi) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))
    assert percentile_interval(draws, 0.95) == pytest.approx((ci.lo, ci.hi))
    assert ci.lo < ci.point < ci.hi
    assert bootstrap_ci(scores, iqm, seed=7) == bootstrap_ci(scores, iqm, seed=7)


def test_resampling_keeps_each_tasks_runs_and_run_count():
    scores = ragged_matrix([np.array([1.0, 2, 3]), np.array([10.0])])
    sample = stratified_resample(scores, reps=500, rng=np.random.default_rng(0))
    assert sample.shape == (500, 3, 2)
    assert set(np.unique(sample[:, :, 0])) == {1.0, 2.0, 3.0}
    assert np.all(sample[:, 0, 1] == 10.0) and np.isnan(sample[:, 1:, 1]).all()


def test_pointwise_mean_ci_averages_the_runs_present_at_each_step():
    mean_curve, lo, hi = pointwise_mean_ci(np.array([[1.0, 2], [3, np.nan]]))
    assert mean_curve == pytest.approx([2.0, 2.0])
    assert (lo[0], hi[0]) == pytest.approx((1.0, 3.0)) and (lo[1], hi[1]) == (2.0, 2.0)


def test_human_normalized_score_maps_random_to_0_and_human_to_1():
    assert human_normalized("Pong", -20.7) == pytest.approx(0.0)
    assert human_normalized("Pong", 14.6) == pytest.approx(1.0)
    assert human_normalized("Breakout", 1.7 + (30.5 - 1.7) / 2) == pytest.approx(0.5)
    named = ["Alien", "Centipede", "CrazyClimber", "Gravitar", "Qbert", "MsPacman", "NameThisGame", "UpNDown",
             "Gopher", "StarGunner", "VideoPinball", "WizardOfWor", "Pong", "Breakout", "SpaceInvaders",
             "Seaquest", "BeamRider", "Enduro", "Asterix", "Asteroids"]
    assert set(named) <= set(SCORES)
    assert all(human > random for random, human in SCORES.values())


@pytest.mark.parametrize("env_id,game", [("ALE/Pong-v5", "Pong"), ("MsPacmanNoFrameskip-v4", "MsPacman"),
                                         ("ale_py:ALE/UpNDown-v5", "UpNDown"), ("CartPole-v1", None),
                                         ("HalfCheetah-v5", None)])
def test_atari_game_from_env_id(env_id, game):
    assert atari_game(env_id) == game
