"""The adapter critic (``policy.value_head=adapter``, TRIL's TL;DR critic) and LoRA dropout, on the
tiny offline models of ``tests/test_llm_trainer.py``: each forward runs with its own adapter, value
gradients never reach the policy's adapter (nor policy gradients the critic's), checkpoints round-trip
both adapters, the reference disables both, and LoRA dropout is inert unless asked."""

import pytest
import torch

from symrl.llm.policy import POLICY_ADAPTER, VALUE_ADAPTER, build_actor_critic, load_causal_lm, window_logits
from symrl.llm.tasks import iteration_examples
from tests.helpers import rlhf_cfg, rlhf_trainer

ADAPTER_CRITIC = {"policy.lora_r": 4, "policy.lora_alpha": 8, "policy.value_head": "adapter", "weight_decay": 0.0}


def _adapter_params(lm, adapter: str) -> dict[str, torch.Tensor]:
    return {n: p for n, p in lm.named_parameters() if "lora_" in n and f".{adapter}." in n}


def _perturb(lm, adapter: str, seed: int) -> None:
    """LoRA B starts at zero (the adapter changes nothing): give it weights that matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in _adapter_params(lm, adapter).items():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_adapter_critic_is_a_second_trainable_adapter_in_the_optimizer(lm_setup, tmp_path):
    trainer = rlhf_trainer(rlhf_cfg(lm_setup, tmp_path, **ADAPTER_CRITIC))
    model = trainer.agent.model
    assert set(model.lm.peft_config) == {POLICY_ADAPTER, VALUE_ADAPTER} and model.critic is None
    policy, value = _adapter_params(model.lm, POLICY_ADAPTER), _adapter_params(model.lm, VALUE_ADAPTER)
    assert policy and value and all(p.requires_grad for p in [*policy.values(), *value.values()])
    trained = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    expected = {id(p) for p in [*policy.values(), *value.values(), *model.value_head.parameters()]}
    assert trained == expected  # both adapters and the head, nothing of the frozen base


def test_each_forward_runs_with_its_own_adapter_and_the_reference_with_none(lm_setup, tmp_path):
    cfg = rlhf_cfg(lm_setup, tmp_path, **ADAPTER_CRITIC)
    trainer = rlhf_trainer(cfg)
    model = trainer.agent.model.eval()
    batch = trainer.collect(iteration_examples(trainer.train_examples, 0, 4, 0)).batch
    args = (batch.input_ids, batch.attention_mask, batch.start)
    base = load_causal_lm(cfg.policy.model, "policy.model").eval()
    with torch.no_grad():
        base_logits = window_logits(base, *args)
        logits, values = model(*args)
        _perturb(model.lm, VALUE_ADAPTER, 1)
        logits_v, values_v = model(*args)
        _perturb(model.lm, POLICY_ADAPTER, 2)
        logits_pv, values_pv = model(*args)
        reference = model(*args, mode="reference")
    assert torch.allclose(logits, base_logits, atol=1e-5)  # a fresh policy adapter is the base
    assert torch.equal(logits_v, logits) and not torch.equal(values_v, values)  # value adapter: values only
    assert torch.equal(values_pv, values_v) and not torch.allclose(logits_pv, logits_v)  # policy adapter: logits only
    assert torch.allclose(reference, base_logits, atol=1e-5)  # both adapters off
    # the reference and the value pass leave the policy adapter active and both adapters trainable
    assert model.lm.active_adapter == POLICY_ADAPTER
    assert all(p.requires_grad for n, p in model.lm.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("only", ["value", "policy"])
def test_value_and_policy_losses_move_only_their_own_adapter(lm_setup, tmp_path, only):
    """One optimizer step with the policy loss zeroed (α = 0, no NLL) leaves every policy-adapter
    weight as it was while the value adapter and head move; with the policy loss alone (vf 0) the
    value adapter and head stay."""
    weights = {"alpha": 0.0, "vf_coef": 0.5} if only == "value" else {"vf_coef": 0.0}
    cfg = rlhf_cfg(lm_setup, tmp_path, n_epochs=1, minibatch_size=8, target_coef=0.0, experiment=only,
               **ADAPTER_CRITIC, **weights)
    trainer = rlhf_trainer(cfg)
    model = trainer.agent.model
    _perturb(model.lm, POLICY_ADAPTER, 3)  # nonzero B: gradients reach both A and B
    _perturb(model.lm, VALUE_ADAPTER, 4)
    rollout = trainer.collect(iteration_examples(trainer.train_examples, 0, cfg.rollouts, 0))
    before = _snapshot(model)
    trainer.update(rollout, torch.Generator().manual_seed(0))
    after = _snapshot(model)
    names = {adapter: [f"lm.{n}" for n in _adapter_params(model.lm, adapter)]
             for adapter in (POLICY_ADAPTER, VALUE_ADAPTER)}
    value = names[VALUE_ADAPTER] + ["value_head.weight", "value_head.bias"]
    moved, kept = (value, names[POLICY_ADAPTER]) if only == "value" else (names[POLICY_ADAPTER], value)
    assert all(torch.equal(before[n], after[n]) for n in kept)
    assert all(not torch.equal(before[n], after[n]) for n in moved)
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n and "value_head" not in n)


def test_adapter_critic_checkpoint_round_trips_both_adapters_and_the_head(lm_setup, tmp_path):
    cfg = rlhf_cfg(lm_setup, tmp_path, **ADAPTER_CRITIC)
    model = rlhf_trainer(cfg).agent.model.eval()
    _perturb(model.lm, POLICY_ADAPTER, 5)
    _perturb(model.lm, VALUE_ADAPTER, 6)
    folder = tmp_path / "checkpoint"
    model.save(folder, model.state_dict())
    assert (folder / "policy" / "adapter_model.safetensors").exists()
    assert (folder / "policy" / VALUE_ADAPTER / "adapter_model.safetensors").exists()
    loaded = build_actor_critic(cfg.policy, folder).eval()
    assert _snapshot(loaded).keys() == _snapshot(model).keys()
    assert all(torch.equal(a, b) for a, b in zip(_snapshot(loaded).values(), _snapshot(model).values()))
    assert all(p.requires_grad for n, p in loaded.lm.named_parameters() if "lora_" in n)
    ids = torch.tensor([[5, 9, 17, 3, 8, 21]])
    with torch.no_grad():
        for a, b in zip(model(ids, torch.ones_like(ids), 3), loaded(ids, torch.ones_like(ids), 3)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("in_updates", [False, True], ids=["inert", "in-updates"])
def test_lora_dropout_is_inert_unless_asked(lm_setup, tmp_path, in_updates):
    """TRIL runs every forward in eval mode, so its lora_dropout 0.1 never acts: with the default,
    the first update's ratios are exactly 1 (old and new log-probabilities equal before any step);
    with ``lora_dropout_in_updates`` the dropout acts in the update's forwards and they are not."""
    cfg = rlhf_cfg(lm_setup, tmp_path, n_epochs=1, minibatch_size=8, experiment=f"dropout-{in_updates}",
               **{"policy.lora_r": 4, "policy.lora_alpha": 8, "policy.lora_dropout": 0.5,
                  "policy.lora_dropout_in_updates": in_updates})
    trainer = rlhf_trainer(cfg)
    assert trainer.agent.model.lm.peft_config[POLICY_ADAPTER].lora_dropout == 0.5  # configured either way
    _perturb(trainer.agent.model.lm, POLICY_ADAPTER, 7)  # with B = 0 dropout could not show
    rollout = trainer.collect(iteration_examples(trainer.train_examples, 0, cfg.rollouts, 0))
    stats = trainer.update(rollout, torch.Generator().manual_seed(0))  # one minibatch, scored before its step
    if in_updates:
        assert stats["approx_kl"] > 1e-4 and stats["clip_fraction"] > 0
    else:
        assert stats["approx_kl"] == 0.0 and stats["clip_fraction"] == 0.0
