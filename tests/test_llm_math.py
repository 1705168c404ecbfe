"""The RLHF token math against hand computations: KL-penalized rewards, token GAE, masked whitening,
the KL controllers, the prompt schedule, the value loss's scale."""


import pytest
import torch

from symrl.advantages import normalize, sign_change_share, token_gae
from symrl.config import ConfigError, build_config
from symrl.llm.config import build_rlhf_config
from symrl.llm.kl import adaptive_kl_coef, kl_penalized_rewards, last_token_index, next_kl_coef
from symrl.llm.tasks import Example, iteration_examples
from symrl.losses import loss_weights, symmetric_loss

MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
LOGP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -9.0]])
REF = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -2.2, -1.0]])


def test_kl_penalized_rewards_by_hand():
    rewards, kl = kl_penalized_rewards(torch.tensor([2.0, -1.0]), LOGP, REF, MASK, kl_coef=0.1)
    # kl = logp - ref on valid tokens; reward = -0.1 kl, plus the score at the last valid token
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [-0.2, 1.0, 0.0]]))
    expected = torch.tensor([[-0.05, 0.1, 2.0], [0.02, -0.1 - 1.0, 0.0]])
    assert torch.allclose(rewards, expected)
    assert last_token_index(MASK).tolist() == [2, 1]


def _hand_gae(rewards, values, length, gamma, lam):
    adv = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv


def test_token_gae_matches_the_recursion_per_sequence():
    rewards = torch.tensor([[0.1, -0.2, 1.0, 0.0], [0.3, 0.5, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 9.0], [0.2, -0.1, 7.0, 7.0]])  # padding values are ignored
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv, ret = token_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for row, length in enumerate((3, 2)):
        hand = _hand_gae(rewards[row].tolist(), values[row].tolist(), length, 0.9, 0.8)
        assert adv[row].tolist() == pytest.approx(hand, abs=1e-6)
        assert ret[row, :length].tolist() == pytest.approx([a + v for a, v in zip(hand, values[row].tolist())][:length],
                                                           abs=1e-6)
    assert adv[0, 3] == 0 and adv[1, 2:].abs().sum() == 0 and ret[1, 2:].abs().sum() == 0


def test_masked_whitening_uses_valid_tokens_only():
    adv = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    z = normalize(adv, mask)
    valid = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = (valid - valid.mean()) / (valid.std() + 1e-8)
    assert torch.allclose(z[mask.bool()], expected)
    assert z[:, 2].abs().sum() == 0
    assert sign_change_share(adv, z, mask).item() == pytest.approx(0.5)  # 1, 2 turn negative; 3, 4 stay positive


def test_kl_controllers():
    assert next_kl_coef("fixed", 0.1, kl=50.0, target=6.0, horizon=10_000, n_samples=64) == 0.1
    # above target: error clipped to +0.2
    assert adaptive_kl_coef(0.1, kl=12.0, target=6.0, horizon=10_000, n_samples=100) == pytest.approx(0.1 * (1 + 0.2 * 0.01))
    # below target: 5.4/6 - 1 = -0.1 (not clipped); 3/6 - 1 = -0.5 is clipped to -0.2
    assert adaptive_kl_coef(0.1, kl=5.4, target=6.0, horizon=1000, n_samples=100) == pytest.approx(0.1 * (1 - 0.1 * 0.1))
    assert next_kl_coef("adaptive", 0.1, 3.0, 6.0, 1000, 100) == pytest.approx(0.1 * (1 - 0.2 * 0.1))


def test_prompt_schedule_is_a_function_of_the_iteration():
    examples = [Example(str(i), None) for i in range(10)]
    seen = [e.prompt for it in range(5) for e in iteration_examples(examples, it, 4, seed=3)]
    assert sorted(seen[:10]) == sorted(str(i) for i in range(10))  # the first pass is a permutation
    assert sorted(seen[10:20]) == sorted(str(i) for i in range(10))
    assert seen[:10] != seen[10:20]  # a new order each pass
    assert [e.prompt for e in iteration_examples(examples, 3, 4, seed=3)] == seen[12:16]
    assert seen != [e.prompt for it in range(5) for e in iteration_examples(examples, it, 4, seed=4)]


def _value_gradient(cfg) -> torch.Tensor:
    """∂(total loss)/∂values of the loss weights of ``cfg``, on a minibatch whose only signal is the
    clipped value loss (zero advantages)."""
    values = torch.tensor([0.5, -0.2, 1.3, 0.0], requires_grad=True)
    old_values = torch.tensor([0.4, 0.1, 1.0, 0.3])
    returns = torch.tensor([1.0, -0.5, 0.2, 0.35])
    zeros = torch.zeros(4)
    terms, _ = symmetric_loss(loss_weights(cfg.loss), zeros, zeros, zeros, zeros, values, returns, old_values,
                              clip_range=0.2, clip_range_vf=0.2, mask=torch.tensor([1, 1, 1, 0]))
    return torch.autograd.grad(terms.total, values)[0]


def test_value_loss_is_tril_half_max_for_rlhf_and_sb3_mse_for_gym():
    """TRIL: 0.5·mean(max((v−R)², (clip(v)−R)²))·vf_coef (ppo.py:172-180); SB3: no 0.5."""
    # ∂max/∂v by hand, clip ±0.2 around the old values:
    #   v=0.5, old 0.4, R=1.0: inside the clip, both terms 0.25 → 2(v−R) = −1.0
    #   v=−0.2, old 0.1, R=−0.5: clip(v)=−0.1, (0.4)² > (0.3)², the clipped term wins → 0
    #   v=1.3, old 1.0, R=0.2: clip(v)=1.2, (1.1)² > (1.0)² → 2(v−R) = 2.2;  the 4th is masked
    d_max = torch.tensor([-1.0, 0.0, 2.2, 0.0]) / 3
    rlhf = build_rlhf_config(None, {"algo": "ppo"})
    assert (rlhf.loss.vf_coef, rlhf.loss.value_loss_scale) == (0.5, 0.5)
    torch.testing.assert_close(_value_gradient(rlhf), 0.5 * d_max * 0.5)
    gym = build_config(None, {"algo": "ppo"})
    assert (gym.loss.vf_coef, gym.loss.value_loss_scale, loss_weights(gym.loss).vf) == (0.5, 1.0, 0.5)  # vf_coef exactly, SB3's
    torch.testing.assert_close(_value_gradient(gym), d_max * 0.5)
    for build in (build_rlhf_config, build_config):
        with pytest.raises(ConfigError, match="value_loss_scale: got 0, allowed: a number > 0"):
            build(None, {"value_loss_scale": 0})
