"""The TRL plug-in (symrl.llm.trl_grpo): β = 0 is TRL's loss exactly, the ratio form's gradient is
|Z|·TRL's clipped-objective gradient, the logprob form's per-token weight is α + β|Z|·π(token), and a
short offline ``train()`` runs with the verifier adapter."""

from __future__ import annotations

import pytest
import torch

from datasets import Dataset  # TRL brings datasets
from trl import GRPOConfig, GRPOTrainer

from symrl.llm import arithmetic
from symrl.llm.trl_grpo import METRIC, SymmetricGRPOConfig, SymmetricGRPOTrainer, verifiable_reward
from symrl.losses import a2c_reverse_loss, ppo_reverse_loss
from tests.llm_reward_fns import completion_length

B, PROMPT, LENGTH = 4, 3, 5  # completions, prompt tokens, completion tokens
ACCUMULATION = 2  # Trainer's loop sets it; 2 checks the plug-in scales as TRL does


def settings(tmp_path, **overrides) -> dict:
    return {"output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, "report_to": "none",
            "num_generations": 2, "max_completion_length": LENGTH, "per_device_train_batch_size": B,
            "gradient_checkpointing": False, "save_strategy": "no", **overrides}


def trainer(lm_setup, tmp_path, plain: bool = False, **overrides) -> GRPOTrainer:
    """A trainer on the tiny policy, in training mode, for calling ``_compute_loss`` by hand."""
    config, cls = (GRPOConfig, GRPOTrainer) if plain else (SymmetricGRPOConfig, SymmetricGRPOTrainer)
    built = cls(model=str(lm_setup / "models" / "policy"), reward_funcs=verifiable_reward(completion_length),
                args=config(**settings(tmp_path, **overrides)), train_dataset=Dataset.from_list([{"prompt": "a"}] * B))
    built.model.train()
    built.current_gradient_accumulation_steps = ACCUMULATION
    return built


def hand_inputs(built: GRPOTrainer, old_noise: float | None = 0.4) -> dict:
    """A batch as TRL's generation step hands it over: old log-probs the current ones plus noise (so some
    tokens fall outside the clip range), or none (on-policy: TRL then uses the current ones, ratio 1)."""
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    inputs = {"prompt_ids": torch.randint(2, 300, (B, PROMPT), generator=g),
              "prompt_mask": torch.ones(B, PROMPT, dtype=torch.long),
              "completion_ids": torch.randint(2, 300, (B, LENGTH), generator=g), "completion_mask": mask,
              "advantages": torch.tensor([1.2, -0.8, 0.5, -0.9]),
              "num_items_in_batch": mask.sum() + 9}  # dapo: the tokens of the whole generation batch
    if old_noise is not None:
        with torch.no_grad():
            logps = current_logps(built, inputs)
        inputs["old_per_token_logps"] = logps + old_noise * torch.randn(logps.shape, generator=g)
    return inputs


def current_logps(built: GRPOTrainer, inputs: dict) -> torch.Tensor:
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    return built._get_per_token_logps_and_entropies(built.model, ids, attention, LENGTH)[0]


def loss_with(built: SymmetricGRPOTrainer, inputs: dict, alpha: float, beta: float) -> torch.Tensor:
    built.args.symmetric_alpha, built.args.symmetric_beta = alpha, beta
    return built._compute_loss(built.model, inputs)


def parameter_grads(built: GRPOTrainer, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, [p for p in built.model.parameters() if p.requires_grad]))


def assert_proportional(got: list[torch.Tensor], base: list[torch.Tensor], scale: float) -> None:
    """got = scale·base for every parameter, to float32 precision relative to the largest entry."""
    largest = max(b.abs().max() for b in base) * scale
    assert largest > 0
    worst = max((g - scale * b).abs().max() for g, b in zip(got, base))
    assert worst <= 1e-4 * largest, f"off by {worst:.3g} of {largest:.3g}"


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_beta_zero_is_trls_loss_exactly(lm_setup, tmp_path, loss_type):
    plain = trainer(lm_setup, tmp_path, plain=True, loss_type=loss_type)
    symmetric = trainer(lm_setup, tmp_path, loss_type=loss_type, symmetric_form="logprob", symmetric_Z=-3.0)
    inputs = hand_inputs(plain)
    expected = plain._compute_loss(plain.model, inputs)
    assert torch.equal(loss_with(symmetric, inputs, 1.0, 0.0), expected)
    assert torch.equal(loss_with(symmetric, inputs, 0.5, 0.0), 0.5 * expected)  # α weighs TRL's whole loss
    assert METRIC not in symmetric._metrics["train"]  # no reverse term computed


def test_beta_zero_returns_trls_tensor_itself(lm_setup, tmp_path, monkeypatch):
    built = trainer(lm_setup, tmp_path)
    trls = torch.tensor(0.25, requires_grad=True)
    monkeypatch.setattr(GRPOTrainer, "_compute_loss", lambda self, model, inputs: trls)
    assert built._compute_loss(built.model, {}) is trls


@pytest.mark.parametrize(("loss_type", "reverse", "Z", "scale"),
                         [("grpo", "rce", -2.5, 2.5), ("bnpo", "rce", -1.0, 1.0), ("dr_grpo", "mae", -1.0, 2.0),
                          ("dapo", "rce", -0.5, 0.5)])
def test_ratio_form_gradient_is_abs_Z_times_trls_clipped_gradient(lm_setup, tmp_path, loss_type, reverse, Z, scale):
    built = trainer(lm_setup, tmp_path, loss_type=loss_type, symmetric_reverse=reverse, symmetric_Z=Z,
                    epsilon=0.2, epsilon_high=0.28)
    inputs = hand_inputs(built)
    trl_grads = parameter_grads(built, loss_with(built, inputs, 1.0, 0.0))  # KL off: TRL's beta is 0
    assert built._metrics["train"]["clip_ratio/region_mean"][-1] > 0.1  # some tokens clipped: f = 0 there
    assert_proportional(parameter_grads(built, loss_with(built, inputs, 0.0, 1.0)), trl_grads, scale)


def test_ratio_form_follows_trls_token_masks_and_vllm_ratio(lm_setup, tmp_path):
    """TRL's off-policy sequence mask, high-entropy token mask and vLLM importance-sampling ratio weigh the
    reverse term's tokens too: the gradient stays |Z|·TRL's."""
    built = trainer(lm_setup, tmp_path, loss_type="grpo", symmetric_Z=-2.0, top_entropy_quantile=0.5,
                    off_policy_mask_threshold=0.0)
    built.use_vllm = built.vllm_importance_sampling_correction = True  # what TRL reads in _compute_loss
    inputs = hand_inputs(built)
    inputs["importance_sampling_ratio"] = 0.5 + torch.rand(B, LENGTH, generator=torch.Generator().manual_seed(1))
    trl_grads = parameter_grads(built, loss_with(built, inputs, 1.0, 0.0))
    assert_proportional(parameter_grads(built, loss_with(built, inputs, 0.0, 1.0)), trl_grads, 2.0)


@pytest.mark.parametrize(("loss_type", "form"), [("bnpo", "ratio"), ("bnpo", "logprob")])
def test_logged_reverse_loss_is_symrls_token_mean(lm_setup, tmp_path, loss_type, form):
    """bnpo reduces as a token mean: the metric is symrl's own ppo_reverse_loss / a2c_reverse_loss."""
    built = trainer(lm_setup, tmp_path, loss_type=loss_type, symmetric_form=form, symmetric_Z=-1.5)
    inputs = hand_inputs(built)
    loss_with(built, inputs, 1.0, 0.7)
    with torch.no_grad():
        logps = current_logps(built, inputs)
    old, adv, mask = inputs["old_per_token_logps"], inputs["advantages"][:, None], inputs["completion_mask"]
    if form == "ratio":
        expected = ppo_reverse_loss(torch.exp(logps - old), torch.exp(old), adv, 0.2, "rce", -1.5, mask)
    else:
        expected = a2c_reverse_loss(torch.exp(logps), adv, "rce", -1.5, mask)
    assert built._metrics["train"][METRIC] == [pytest.approx(expected.item(), rel=1e-5)]


@pytest.mark.parametrize(("loss_type", "reverse", "scale"), [("grpo", "rce", 2.0), ("dapo", "mae", 2.0)])
def test_logprob_form_weighs_reinforce_per_token_by_alpha_plus_beta_abs_Z_pi(lm_setup, tmp_path, monkeypatch,
                                                                            loss_type, reverse, scale):
    """On-policy (ratio 1) TRL's per-token gradient is REINFORCE's; the logprob form multiplies it by
    α + β·|Z|·π(token) (MAE: 2 in place of |Z|), token by token."""
    alpha, beta = 0.5, 0.8
    built = trainer(lm_setup, tmp_path, loss_type=loss_type, symmetric_form="logprob", symmetric_reverse=reverse,
                    symmetric_Z=-2.0)
    logps = (torch.randn(B, LENGTH, generator=torch.Generator().manual_seed(2)) - 1.0).requires_grad_()
    forwards = []

    def stub(*args, **kwargs):  # the log-probs as a leaf, counting forward passes
        forwards.append(1)
        return logps, torch.zeros_like(logps), None

    monkeypatch.setattr(built, "_get_per_token_logps_and_entropies", stub)
    inputs = hand_inputs(built, old_noise=None)
    reinforce = torch.autograd.grad(loss_with(built, inputs, 1.0, 0.0), logps)[0]
    if loss_type == "grpo":  # −Â per token, averaged over each completion's tokens, then over completions
        mask = inputs["completion_mask"]
        by_hand = -inputs["advantages"][:, None] * mask / mask.sum(1, keepdim=True) / B / ACCUMULATION
        torch.testing.assert_close(reinforce, by_hand)
    symmetric = torch.autograd.grad(loss_with(built, inputs, alpha, beta), logps)[0]
    torch.testing.assert_close(symmetric, (alpha + beta * scale * torch.exp(logps.detach())) * reinforce)
    assert len(forwards) == 2  # one per loss: the reverse term reuses TRL's forward pass
    assert built._get_per_token_logps_and_entropies is stub  # and the capture put the stub back


@pytest.mark.parametrize(("overrides", "message"), [
    ({"symmetric_form": "ppo"}, "symmetric_form: got 'ppo', allowed: 'ratio', 'logprob'"),
    ({"symmetric_reverse": "ce"}, "symmetric_reverse: got 'ce', allowed: 'rce', 'mae'"),
    ({"symmetric_Z": 0.0}, "symmetric_Z: got 0.0, allowed: a negative number"),
    ({"symmetric_beta": -1.0}, "symmetric_beta: got -1.0, allowed: a number >= 0"),
    ({"symmetric_alpha": 0.0}, "symmetric_alpha, symmetric_beta: both 0"),
    ({"symmetric_beta": 1.0, "loss_type": "cispo"}, "loss_type: got 'cispo' with symmetric_beta > 0, allowed: grpo"),
    ({"symmetric_beta": 1.0, "delta": 2.0}, "delta: got 2.0 with symmetric_form='ratio'"),
    ({"symmetric_beta": 1.0, "importance_sampling_level": "sequence", "loss_type": "grpo"},
     "importance_sampling_level: got 'sequence' with symmetric_form='ratio'"),
])
def test_bad_settings_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        SymmetricGRPOConfig(**settings(tmp_path, **overrides))


def test_trainer_needs_the_symmetric_config(lm_setup, tmp_path):
    with pytest.raises(TypeError, match="args: got GRPOConfig, allowed: a SymmetricGRPOConfig"):
        SymmetricGRPOTrainer(model=str(lm_setup / "models" / "policy"),
                             reward_funcs=verifiable_reward(completion_length), args=GRPOConfig(**settings(tmp_path)))


def test_verifiable_reward_reads_the_reference_column():
    score = verifiable_reward(arithmetic.reward)
    assert score.__name__ == "reward"
    assert score(prompts=["Q: 2 + 3 = ?\nA:"] * 2, completions=[" 5", " 6"], reference=[" 5", " 5"],
                 completion_ids=[[1], [2]], trainer_state=None) == [1.0, 0.0]
    chat = score(prompts=[[{"role": "user", "content": "Q: 2 + 3 = ?"}]],
                 completions=[[{"role": "assistant", "content": "It is 5."}]], reference=[" 5"])
    assert chat == [1.0]


def test_short_train_run_logs_the_reverse_term_and_moves_the_policy(lm_setup, tmp_path):
    data = Dataset.from_list([{"prompt": p.prompt, "reference": p.reference}
                              for p in arithmetic.problems(0, 4, "train")])
    args = SymmetricGRPOConfig(**settings(tmp_path, max_completion_length=6, max_steps=2, logging_steps=1,
                                          learning_rate=1e-2, symmetric_beta=0.5, seed=0))
    # the verifier scores 0 on a policy that never learned arithmetic; the length keeps advantages nonzero
    built = SymmetricGRPOTrainer(model=str(lm_setup / "models" / "policy"), args=args, train_dataset=data,
                                 reward_funcs=[verifiable_reward(arithmetic.reward),
                                               verifiable_reward(completion_length)])
    before = {name: p.detach().clone() for name, p in built.model.named_parameters()}
    built.train()
    logged = [entry[METRIC] for entry in built.state.log_history if METRIC in entry]
    assert built.state.global_step == 2 and len(logged) == 2
    assert all(torch.isfinite(torch.tensor(logged)))
    assert "rewards/reward/mean" in built.state.log_history[0]
    assert any(not torch.equal(p, before[name]) for name, p in built.model.named_parameters())
