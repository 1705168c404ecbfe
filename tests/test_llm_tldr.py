"""The TL;DR setting as TRIL runs it, offline on tiny models: prompts cut at "TL;DR:", the hub's
train/valid splits, whitening per micro-batch over padded tensors, the reward-model adapter on the
policy's base, greedy evaluation, and a whole run with the adapter critic and the adapter reward."""

import json

import pytest
import torch

from symrl.llm.config import build_rlhf_config
from symrl.llm.policy import POLICY_ADAPTER, REWARD_ADAPTER, VALUE_ADAPTER
from symrl.llm.rewards import AdapterReward
from symrl.llm.tasks import load_examples, tldr_prompts
from symrl.llm.trainer import train_rlhf, whiten
from symrl.run import load_checkpoint, read_jsonl, run_dir
from tests.helpers import corpus, rlhf_cfg, rlhf_trainer, settings_view

WORDS = ["[UNK]", " ", "\n", "TL;DR:", "SUBREDDIT:", "r/cats", "TITLE:", "help", "POST:", "my", "cat", "ate",
         "homework", *"0123456789"]
LORA = {"policy.lora_r": 4, "policy.lora_alpha": 8}


@pytest.fixture(scope="module")
def words():
    """A tokenizer whose tokens are words and single whitespace characters, so that token counts
    can be read off a post by eye, and decoding gives the text back exactly."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", truncation_side="left")


def test_tldr_presets_set_the_released_values():
    """Symmetric_tril cfgs/alg/ppo.yaml:158-232, cfgs/task/tldr.yaml, examples/tldr/tldr_{ppo,sppo}.sh."""
    ppo, sppo = build_rlhf_config("tldr-ppo"), build_rlhf_config("tldr-sppo")
    p, r, g = ppo.policy, ppo.reward, ppo.generation
    assert (p.model, p.tokenizer, p.value_head, p.load_in, p.lora_r, p.lora_alpha, p.lora_dropout,
            p.lora_dropout_in_updates) == ("CarperAI/openai_summarize_tldr_sft", "gpt2", "adapter", "4bit", 8, 64, 0.1,
                                           False)
    assert (r.kind, r.model, r.relative_to_reference) == ("adapter", "jdchang/tldr_rm_adapter", False)
    assert (g.prompt_tokens, g.max_new_tokens, g.min_new_tokens, g.top_k, g.eval_greedy) == (500, 50, 0, 50, True)
    assert (ppo.iterations, ppo.rollouts, ppo.minibatch_size, ppo.grad_accum, ppo.loss.n_epochs) == (200, 64, 16, 4, 4)
    assert (ppo.loss.gamma, ppo.loss.gae_lambda, ppo.loss.clip_range, ppo.loss.clip_range_vf, ppo.loss.vf_coef, ppo.loss.value_loss_scale,
            ppo.loss.max_grad_norm) == (1.0, 0.95, 0.2, 0.2, 0.1, 0.5, 1.0)
    assert (ppo.kl_coef, ppo.kl_controller, ppo.lr, ppo.adam_eps, ppo.weight_decay, ppo.target_coef) == (
        0.002, "fixed", 5e-6, 1e-5, 0.01, 0.1)
    assert (ppo.loss.norm_adv, ppo.norm_adv_scope, ppo.eval_every, ppo.eval_prompts) == (True, "microbatch_padded", 10, 100)
    assert (ppo.loss.alpha, ppo.loss.beta, sppo.loss.alpha, sppo.loss.beta, sppo.loss.Z) == (1.0, 0.0, 0.5, 0.2, -1.0)
    assert {k for k, v in settings_view(sppo).items() if v != settings_view(ppo)[k]} == {"algo", "alpha", "beta"}


def test_tldr_prompts_cut_the_post_at_the_marker_and_keep_its_start(words):
    """TRIL tasks.py:88-112 with 12 tokens: the post before "TL;DR:", its first 12 − 5 tokens,
    stripped, then "\\nTL;DR:"; the subreddit and title survive, the post's end does not."""
    posts = ["SUBREDDIT: r/cats\nTITLE: help\nPOST: my cat ate my homework\nTL;DR: cat ate",
             "POST: my cat\n",                                   # no marker: the whole post
             " POST: cat ate my homework TL;DR: my TL;DR: ate"]  # cut at the first marker; 7th token a space
    assert tldr_prompts(posts, words, 12) == ["SUBREDDIT: r/cats\nTITLE: help\nTL;DR:", "POST: my cat\nTL;DR:",
                                              "POST: cat ate\nTL;DR:"]
    assert words.truncation_side == "left"  # the policy's tokenizer is left as it was


def test_tldr_hub_splits_train_on_train_and_evaluate_on_the_first_valid_posts(words, monkeypatch):
    """TRIL tasks.py:80,114-122: every training post (in order, none dropped), the first
    ``eval_prompts`` posts of ``valid`` in order."""
    splits = {split: [{"prompt": f"POST: {split[0] == 't' and 'cat' or 'my'} {i}\nTL;DR:", "label": f" cat {i}"}
                      for i in range(n)] for split, n in (("train", 6), ("valid", 5))}
    requested = []

    def hub_records(dataset, split="train"):
        requested.append((dataset, split))
        return splits[split]

    monkeypatch.setattr("symrl.llm.tasks._hub_records", hub_records)
    cfg = build_rlhf_config(None, {"task": "tldr", "eval_prompts": 3, "rollouts": 4, "minibatch_size": 4,
                                   "generation.prompt_tokens": 12})
    train, held_out = load_examples(cfg, words)
    assert requested == [("CarperAI/openai_summarize_tldr", "train"), ("CarperAI/openai_summarize_tldr", "valid")]
    assert [(e.prompt, e.reference) for e in train] == [(f"POST: cat {i}\nTL;DR:", f" cat {i}") for i in range(6)]
    assert [(e.prompt, e.reference) for e in held_out] == [(f"POST: my {i}\nTL;DR:", f" cat {i}") for i in range(3)]


def _whitened_by_hand(values: list[list[float]]) -> list[list[float]]:
    flat = [x for row in values for x in row]
    mean = sum(flat) / len(flat)
    std = (sum((x - mean) ** 2 for x in flat) / (len(flat) - 1)) ** 0.5  # torch's std(): unbiased, as TRIL calls it
    return [[(x - mean) / (std + 1e-8) for x in row] for row in values]


def test_whitening_scopes_on_a_padded_batch():
    """microbatch_padded (TRIL ppo.py:107-108): per micro-batch of 2 rows, over all positions of the
    rows × max_new_tokens (5) tensor, padding zeros included; minibatch_tokens: over the valid tokens
    of the whole minibatch, padding left at 0."""
    advantages = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, 0.0], [-1.0, 4.0, 2.0], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
    rows = advantages.tolist()
    upstream = [row[:3] for part in (rows[:2], rows[2:]) for row in _whitened_by_hand([r + [0.0, 0.0] for r in part])]
    assert torch.allclose(whiten(advantages, mask, "microbatch_padded", 2, 5), torch.tensor(upstream), atol=1e-6)
    valid = [x for row, m in zip(rows, mask.tolist()) for x, keep in zip(row, m) if keep]
    by_hand = iter(_whitened_by_hand([valid])[0])
    masked = [[next(by_hand) if keep else 0.0 for keep in m] for m in mask.tolist()]
    assert torch.allclose(whiten(advantages, mask, "minibatch_tokens", 2, 5), torch.tensor(masked), atol=1e-6)


def _reward_adapter(base_folder, folder):
    """A tiny reward model in TRIL's format: LoRA weights (random A and B, so that the adapter
    matters) and a one-output ``score`` head in the same adapter file."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(11)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_folder),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False))
    model.save_pretrained(folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    weights["base_model.model.score.weight"] = torch.randn(1, model.config.hidden_size)
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return weights["base_model.model.score.weight"]


def test_adapter_reward_is_the_score_of_the_reward_adapter_on_the_policy_base(lm_setup, tmp_path):
    policy = lm_setup / "models" / "policy"
    head = _reward_adapter(policy, tmp_path / "rm")
    cfg = rlhf_cfg(lm_setup, tmp_path, **LORA, **{"policy.value_head": "adapter", "reward.kind": "adapter",
                                               "reward.model": str(tmp_path / "rm"), "reward.batch_size": 3})
    trainer = rlhf_trainer(cfg)
    assert isinstance(trainer.agent.reward, AdapterReward) and trainer.agent.reward.lm is trainer.agent.model.lm  # one base
    prompts = ["the film was", "the movie was great. the plot", "a", "the cast was lovely and the music"]
    completions = [" great.", " was dull and the ending was awful.", " story", ""]
    rewards = trainer.agent.reward(prompts, completions, None)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    by_hand = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(policy), str(tmp_path / "rm")).eval()
    expected = []
    for prompt, completion in zip(prompts, completions):
        ids = trainer.agent.tokenizer(f"<|startoftext|>{prompt}{completion}<|endoftext|>", return_tensors="pt")
        with torch.no_grad():
            hidden = by_hand(**ids, output_hidden_states=True).hidden_states[-1][0, -1]
        expected.append((head[0] @ hidden).item())
    assert torch.allclose(rewards, torch.tensor(expected), atol=1e-5), (rewards, expected)
    assert rewards.std() > 0
    # relative_to_reference subtracts the reference's score of the same prompt
    references = [" dull.", " was fine.", " b", " ok"]
    trainer.agent.reward.relative_to_reference = True
    relative = trainer.agent.reward(prompts, completions, references)
    trainer.agent.reward.relative_to_reference = False
    assert torch.allclose(relative, rewards - trainer.agent.reward(prompts, references, None), atol=1e-5)
    # the reward adapter is frozen and apart: not trained, not saved; the policy adapter stays active
    lm = trainer.agent.model.lm
    assert lm.active_adapter == POLICY_ADAPTER
    trained = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    for name, param in lm.named_parameters():
        if "lora_" in name:
            assert (f".{REWARD_ADAPTER}." in name) != (param.requires_grad and id(param) in trained), name
    trainer.agent.model.save(tmp_path / "saved", trainer.agent.model.state_dict())
    assert (tmp_path / "saved" / "policy" / VALUE_ADAPTER).is_dir()
    assert not (tmp_path / "saved" / "policy" / REWARD_ADAPTER).exists()


def test_adapter_reward_needs_a_score_head(lm_setup, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from symrl.config import ConfigError

    policy = lm_setup / "models" / "policy"
    get_peft_model(AutoModelForCausalLM.from_pretrained(policy), LoraConfig(r=2, target_modules=["c_attn"])) \
        .save_pretrained(tmp_path / "no-head")
    cfg = rlhf_cfg(lm_setup, tmp_path, **LORA, **{"reward.kind": "adapter", "reward.model": str(tmp_path / "no-head")})
    with pytest.raises(ConfigError, match="reward.model: .*no one-output 'score' head"):
        rlhf_trainer(cfg)


def _tldr_data(path):
    path.write_text("".join(json.dumps({"prompt": f"post {i}: {r['text']}\nTL;DR:", "label": " the plot was dull."})
                            + "\n" for i, r in enumerate(corpus(40))))
    return str(path)


@pytest.mark.parametrize("greedy", [True, False])
def test_evaluation_decodes_greedily_when_asked(lm_setup, tmp_path, greedy):
    """With ``generation.eval_greedy`` the held-out completions are the argmax continuations, the
    same under any evaluation seed; sampled ones differ between seeds."""
    cfg = rlhf_cfg(lm_setup, tmp_path, task="tldr", data=_tldr_data(tmp_path / "tldr.jsonl"), eval_samples=8,
               experiment=f"greedy-{greedy}", **{"generation.prompt_tokens": 24, "generation.eval_greedy": greedy,
                                                 "generation.min_new_tokens": 0})
    trainer = rlhf_trainer(cfg)
    runs = []
    for iteration in (0, 5):  # evaluation seeds itself with the iteration
        trainer.completed = iteration
        runs.append([s["completion"] for s in trainer.evaluate()["samples"]])
    assert (runs[0] == runs[1]) == greedy
    if greedy:
        lm, tokenizer = trainer.agent.model.lm, trainer.agent.tokenizer
        ids = tokenizer(trainer.eval_examples[0].prompt, return_tensors="pt")["input_ids"][:, -24:]
        start = ids.shape[1]
        with torch.no_grad():
            for _ in range(cfg.generation.max_new_tokens):
                ids = torch.cat([ids, lm(ids).logits[:, -1:].argmax(-1)], dim=1)
                if ids[0, -1] == tokenizer.eos_token_id:
                    break
        assert runs[0][0] == tokenizer.decode(ids[0, start:], skip_special_tokens=True)


def test_a_tldr_run_with_the_adapter_critic_and_reward_trains_evaluates_and_saves(lm_setup, tmp_path):
    _reward_adapter(lm_setup / "models" / "policy", tmp_path / "rm")
    cfg = rlhf_cfg(lm_setup, tmp_path, task="tldr", data=_tldr_data(tmp_path / "tldr.jsonl"), iterations=2, eval_every=1,
               grad_accum=2, target_coef=0.1, norm_adv_scope="microbatch_padded",
               **LORA, **{"policy.value_head": "adapter", "reward.kind": "adapter",
                          "reward.model": str(tmp_path / "rm"), "generation.prompt_tokens": 24,
                          "generation.min_new_tokens": 0, "generation.eval_greedy": True})
    summary = train_rlhf(cfg, progress=False)
    rows = read_jsonl(run_dir(cfg) / "metrics.jsonl")
    evals = read_jsonl(run_dir(cfg) / "eval.jsonl")
    assert summary["finished"] and len(rows) == 2 and "target_nll" in rows[0]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # fresh adapters: the policy is its reference
    assert {"rouge1", "win_rate"} <= set(evals[-1]) and [e["step"] for e in evals] == [0, 1, 2]
    folder = run_dir(cfg) / "checkpoints" / load_checkpoint(run_dir(cfg))["folder"] / "policy"
    assert (folder / "adapter_model.safetensors").exists() and (folder / VALUE_ADAPTER).is_dir()
    assert not (folder / REWARD_ADAPTER).exists()
