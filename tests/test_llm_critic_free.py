"""Critic-free training (GRPO, RLOO, Dr. GRPO), loss aggregations, clip-higher, the logprob form of
the symmetric term, and training-reward noise: each against a hand computation."""

from __future__ import annotations

import pytest
import torch

from symrl.advantages import group_advantages
from symrl.losses import LossWeights, masked_mean, symmetric_loss, token_weights
from tests.helpers import rlhf_cfg, rlhf_trainer

# 2 prompts × 4 completions: binary verifier scores
SCORES = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])


def test_group_advantages_by_hand():
    # prompt 1: mean 0.5, unbiased std sqrt(1/3); prompt 2: mean 0.75, std 0.5
    grpo = group_advantages(SCORES, 4, "grpo", eps=0.0)
    s1 = (1 / 3) ** 0.5
    expected = torch.tensor([0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1, 0.25 / 0.5, 0.25 / 0.5, 0.25 / 0.5, -0.75 / 0.5])
    torch.testing.assert_close(grpo, expected)
    torch.testing.assert_close(group_advantages(SCORES, 4, "drgrpo"),
                               torch.tensor([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75]))
    # leave-one-out: 1 − mean(0, 0, 1) = 2/3; 0 − mean(1, 0, 1) = −2/3; 1 − mean(1, 1, 0) = 1/3; 0 − 1 = −1
    torch.testing.assert_close(group_advantages(SCORES, 4, "rloo"),
                               torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, -1.0]))
    assert torch.equal(group_advantages(torch.ones(4), 4, "grpo"), torch.zeros(4))  # no spread, no signal
    with pytest.raises(ValueError, match="advantage: got 'ppo'"):
        group_advantages(SCORES, 4, "ppo")


def test_loss_aggregations_by_hand():
    """x per token of 2 sequences of lengths 1 and 3 (max 4): token-mean = (1 + 2 + 3 + 4) / 4;
    seq-mean-token-mean = (1 + (2 + 3 + 4) / 3) / 2; seq-mean-token-sum-norm = (1 + 9) / (2 · 4)."""
    x = torch.tensor([[1.0, 9.0, 9.0, 9.0], [2.0, 3.0, 4.0, 9.0]])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    expected = {"token-mean": 10 / 4, "seq-mean-token-mean": (1 + 3) / 2, "seq-mean-token-sum-norm": 10 / 8}
    for aggregation, value in expected.items():
        w, norm = token_weights(mask, aggregation, max_len=4)
        whole = masked_mean(x, w) * w.sum() / norm
        assert whole.item() == pytest.approx(value)
        # split into micro-batches of one row each: the shares add up to the same loss
        parts = sum(masked_mean(x[i:i + 1], w[i:i + 1]) * w[i:i + 1].sum() / norm for i in range(2))
        assert parts.item() == pytest.approx(value)
    with pytest.raises(ValueError, match="loss_aggregation"):
        token_weights(mask, "sum", 4)


def test_clip_higher_keeps_the_gradient_between_the_two_clips():
    """Positive advantages: PPO's gradient vanishes above 1 + ε; with ε_high it lives on to 1 + ε_high."""
    ratio_logs = torch.log(torch.tensor([1.1, 1.25, 1.35]))
    lp = ratio_logs.clone().requires_grad_()
    weights = LossWeights(1.0, 0.0, 0.0, 0.0)

    def grad(high):
        terms, _ = symmetric_loss(weights, lp, torch.zeros(3), torch.ones(3), torch.zeros(3), torch.zeros(3),
                                  torch.zeros(3), clip_range=0.2, clip_range_high=high)
        return torch.autograd.grad(terms.total, lp)[0]

    assert (grad(None) != 0).tolist() == [True, False, False]
    assert (grad(0.28) != 0).tolist() == [True, True, False]


def test_logprob_form_reverse_gradient_is_pi_weighted_reinforce_per_token():
    """SA2C's form on tokens: ∇ = (α + β|Z|·π(token))·∇REINFORCE, token by token, padding excluded."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 5, (2, 3), generator=gen)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    alpha, beta, Z = 0.5, 0.4, -1.0

    def grad(w):
        lp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
        terms, _ = symmetric_loss(w, lp, None, adv, torch.zeros_like(adv), torch.zeros_like(adv),
                                  torch.zeros_like(adv), mask=mask)
        return torch.autograd.grad(terms.total, logits)[0], lp.exp().detach()

    g_sym, prob = grad(LossWeights(alpha, beta, 0.0, 0.0, "rce", Z, "a2c"))
    g_reinforce, _ = grad(LossWeights(1.0, 0.0, 0.0, 0.0, "rce", Z, "a2c"))
    weight = (alpha + beta * abs(Z) * prob)[..., None]
    torch.testing.assert_close(g_sym, weight * g_reinforce, rtol=1e-10, atol=1e-12)
    assert torch.count_nonzero(g_sym[0, 2]) == 0  # the padding token


def test_adam_cancels_the_ratio_form_rescale_without_value_kl_or_clipping():
    """SPPO's ratio form is PPO times α + β|Z|; Adam divides a constant scale out (up to eps), so
    with no value or KL term and no gradient clipping the two runs stay equal: 10 steps on one batch
    (the ratio moves and clips)."""
    gen = torch.Generator().manual_seed(1)
    logits0 = torch.randn(64, 6, generator=gen)
    actions = torch.randint(0, 6, (64,), generator=gen)
    old = torch.log_softmax(logits0, -1).gather(1, actions[:, None]).squeeze(1)
    adv = torch.randn(64, generator=gen)
    finals = []
    for weights in (LossWeights(1.0, 0.0, 0.0, 0.0), LossWeights(0.5, 1.0, 0.0, 0.0)):
        logits = torch.nn.Parameter(logits0.clone())
        adam = torch.optim.Adam([logits], lr=0.05)
        for _ in range(10):
            lp = torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1)
            terms, ratio = symmetric_loss(weights, lp, old, adv, torch.zeros(64), torch.zeros(64), torch.zeros(64))
            adam.zero_grad()
            terms.total.backward()
            adam.step()
        finals.append(logits.detach())
        assert (ratio - 1).abs().max() > 0.2  # the clip was reached
    moved = (finals[0] - logits0).norm()
    assert (finals[0] - finals[1]).norm() / moved < 1e-3


def test_critic_free_rollout_has_group_advantages_and_no_value_head(lm_setup, tmp_path):
    cfg = rlhf_cfg(lm_setup, tmp_path, advantage="rloo", group_size=4)
    assert (cfg.policy.value_head, cfg.kl_in, cfg.loss.norm_adv) == ("none", "off", False)
    trainer = rlhf_trainer(cfg)
    assert trainer.agent.model.value_head is None
    examples = trainer.train_examples[:2]
    rollout = trainer.collect([e for e in examples for _ in range(4)])
    expected = group_advantages(rollout.scores.float(), 4, "rloo")[:, None] * rollout.mask
    torch.testing.assert_close(rollout.advantages, expected)
    assert torch.equal(rollout.values, torch.zeros_like(rollout.values))
    stats = trainer.update(rollout, torch.Generator().manual_seed(0))
    assert stats["value_loss"] == 0.0 and stats["grad_norm"] > 0


def test_training_reward_noise_never_reaches_evaluation(lm_setup, tmp_path):
    """noise=reward_flip p=1 flips every training reward (the advantages change sign), while the
    logged scores and the evaluation stay those of the clean run."""
    runs = {}
    for noise in ("none", "reward_flip"):
        cfg = rlhf_cfg(lm_setup, tmp_path, experiment=noise, advantage="drgrpo", group_size=4, noise=noise,
                       noise_scale=1.0, eval_prompts=4)
        trainer = rlhf_trainer(cfg)
        torch.manual_seed(0)
        rollout = trainer.collect([e for e in trainer.train_examples[:2] for _ in range(4)])
        runs[noise] = (rollout, trainer.evaluate())
    clean, noisy = runs["none"][0], runs["reward_flip"][0]
    assert torch.equal(clean.scores, noisy.scores)
    flipped = group_advantages(1.0 - noisy.scores.float(), 4, "drgrpo")[:, None] * noisy.mask
    torch.testing.assert_close(noisy.advantages, flipped)
    torch.testing.assert_close(noisy.advantages, -clean.advantages)
    assert {k: v for k, v in runs["none"][1].items()} == {k: v for k, v in runs["reward_flip"][1].items()}


def test_bad_critic_free_settings_name_the_field(lm_setup, tmp_path):
    from symrl.config import ConfigError

    cases = {"group_size: got 1 with advantage=grpo": {"advantage": "grpo"},
             "kl_in: got 'reward' with advantage=grpo": {"advantage": "grpo", "group_size": 4, "kl_in": "reward"},
             "policy.value_head: got 'separate' with advantage=rloo": {"advantage": "rloo", "group_size": 4,
                                                                      "policy.value_head": "separate"},
             "group_size: got 3, allowed: a divisor of rollouts": {"advantage": "rloo", "group_size": 3},
             "n_epochs, minibatch_size: got 2, 4 with algo=sa2c": {"algo": "sa2c"},
             "loss_aggregation: got 'sum'": {"loss_aggregation": "sum"}}
    for message, overrides in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            rlhf_cfg(lm_setup, tmp_path, **overrides)


def test_the_logprob_form_trains_critic_free(lm_setup, tmp_path):
    """SA2C's form with GRPO advantages: one on-policy step per iteration, a run that finishes and
    checkpoints without a value head."""
    from symrl.llm.trainer import train_rlhf
    from symrl.run import load_checkpoint, read_jsonl, run_dir

    cfg = rlhf_cfg(lm_setup, tmp_path, algo="sa2c", n_epochs=1, minibatch_size=8, advantage="grpo", group_size=4,
                   iterations=2)
    assert cfg.loss.family == "a2c" and cfg.loss.beta == 0.4
    assert train_rlhf(cfg, progress=False)["finished"]
    rows = read_jsonl(run_dir(cfg) / "metrics.jsonl")
    assert len(rows) == 2 and all(r["reverse_loss"] != 0 for r in rows)
    folder = run_dir(cfg) / "checkpoints" / load_checkpoint(run_dir(cfg))["folder"]
    assert not (folder / "value_head.safetensors").exists()


def test_with_the_kl_off_the_reference_is_not_run_in_training_but_evaluation_reports_the_kl(lm_setup, tmp_path,
                                                                                              monkeypatch):
    """kl_in=off: nothing in training needs the reference, so it is not run (TRL's GRPO skips it too);
    the training row has no KL, evaluation still measures it; kl_in=loss runs it."""
    off = rlhf_trainer(rlhf_cfg(lm_setup, tmp_path, experiment="off", advantage="grpo", group_size=4, eval_prompts=4))
    calls = {"n": 0}
    reference_logprobs = type(off.agent.reference).logprobs

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return reference_logprobs(self, *args, **kwargs)

    monkeypatch.setattr(type(off.agent.reference), "logprobs", counted)
    row = off.iteration()
    assert calls["n"] == 0 and row["kl"] is None and row["grad_norm"] > 0
    assert off.evaluate()["kl"] is not None and calls["n"] > 0
    calls["n"] = 0
    in_loss = rlhf_trainer(rlhf_cfg(lm_setup, tmp_path, experiment="loss", advantage="grpo", group_size=4,
                                    kl_in="loss"))
    assert in_loss.iteration()["kl"] is not None and calls["n"] > 0
