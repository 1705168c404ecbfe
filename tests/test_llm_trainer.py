"""``symrl rlhf`` end to end on tiny models built in the test, offline: scoring equals sampling,
the per-token SPPO gradient, β=0 ≡ PPO, the reward rises, resume ≡ uninterrupted, LoRA, files."""

import json
import math

import pytest
import torch

from symrl.cli import main
from symrl.config import ConfigError
from symrl.llm.config import build_rlhf_config
from symrl.llm.generation import Batch, encode_prompts, mask_after_eos
from symrl.llm.policy import token_logprobs
from symrl.llm.tasks import iteration_examples
from symrl.llm.trainer import RLHFTrainer, _shares, train_rlhf
from symrl.run import load_checkpoint, read_jsonl, run_dir
from tests.helpers import checkpoint_tensors, corpus, rlhf_cfg, rlhf_trainer, settings_view, tiny_llama

def test_scoring_gives_the_log_probs_generation_sampled_with(lm_setup, tmp_path):
    """Left padding, position ids and the logits window: the trainer's scoring of a rollout (policy and
    reference) reproduces the logits ``generate`` sampled from, eos cut included."""
    cfg = rlhf_cfg(lm_setup, tmp_path, **{"generation.min_new_tokens": 0, "generation.temperature": 0.7})
    trainer = rlhf_trainer(cfg)
    tokenizer, lm = trainer.agent.tokenizer, trainer.agent.model.lm
    query, mask = encode_prompts(tokenizer, ["the film was", "the movie was great. the plot was dull. the cast"],
                                 16, torch.device("cpu"))
    assert mask[0, 0] == 0  # the short prompt is left-padded
    torch.manual_seed(1)
    out = lm.generate(input_ids=query, attention_mask=mask, do_sample=True, top_k=0, temperature=0.7,
                      max_new_tokens=8, pad_token_id=tokenizer.pad_token_id, output_logits=True,
                      return_dict_in_generate=True)
    continuation, cont_mask = mask_after_eos(out.sequences[:, query.shape[1]:], tokenizer.eos_token_id,
                                             tokenizer.pad_token_id)
    expected = token_logprobs(torch.stack(out.logits, dim=1) / 0.7, continuation)
    logprobs, values, ref = trainer.agent.score(Batch(query, mask, continuation, cont_mask))
    valid = cont_mask.bool()
    assert logprobs.shape == values.shape == continuation.shape
    assert torch.allclose(logprobs[valid], expected[valid], atol=1e-4)
    assert torch.allclose(ref[valid], expected[valid], atol=1e-4)  # the reference is the initial policy


def test_sppo_token_gradient_is_alpha_plus_beta_z_times_ppo(lm_setup, tmp_path):
    """Per generated token, ∇L_SPPO = (α + β|Z|) ∇L_PPO (PAPER.md §2), through the real LM."""
    grads = {}
    rollout = None
    for algo, extra in (("ppo", {}), ("sppo", {"alpha": 0.5, "beta": 0.4})):
        cfg = rlhf_cfg(lm_setup, tmp_path, algo=algo, vf_coef=0.0, target_coef=0.0, experiment=algo, **extra)
        trainer = rlhf_trainer(cfg)
        if rollout is None:
            torch.manual_seed(0)
            rollout = trainer.collect(iteration_examples(trainer.train_examples, 0, cfg.rollouts, 0))
            # perturb the policy's view of the old log-probs so that some tokens are clipped
            rollout.logprobs = rollout.logprobs + 0.3 * torch.randn_like(rollout.logprobs)
        rows = torch.arange(4)
        from symrl.advantages import normalize

        trainer._micro_step(rollout, rows, normalize(rollout.advantages[rows], rollout.mask[rows]),
                            _shares(rollout, rows, cfg), {})
        grads[algo] = torch.cat([p.grad.flatten() for n, p in trainer.agent.model.lm.named_parameters() if p.grad is not None])
    assert grads["ppo"].abs().sum() > 0
    assert torch.allclose(grads["sppo"], 0.9 * grads["ppo"], rtol=1e-4, atol=1e-7)


def test_beta_zero_sppo_is_ppo_exactly(lm_setup, tmp_path):
    a = train_rlhf(rlhf_cfg(lm_setup, tmp_path, algo="ppo", iterations=2, experiment="a"), progress=False)
    b = train_rlhf(rlhf_cfg(lm_setup, tmp_path, algo="sppo", alpha=1.0, beta=0.0, iterations=2, experiment="b"),
                   progress=False)
    pa = checkpoint_tensors(run_dir(rlhf_cfg(lm_setup, tmp_path, algo="ppo", iterations=2, experiment="a")))
    pb = checkpoint_tensors(run_dir(rlhf_cfg(lm_setup, tmp_path, algo="sppo", alpha=1.0, beta=0.0, iterations=2, experiment="b")))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert a["final_eval_mean"] == b["final_eval_mean"]
    # and the reverse term is not ignored: β > 0 moves the parameters differently
    c = rlhf_cfg(lm_setup, tmp_path, algo="sppo", alpha=1.0, beta=0.4, iterations=2, experiment="c")
    train_rlhf(c, progress=False)
    pc = checkpoint_tensors(run_dir(c))
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)


def test_gradient_accumulation_changes_memory_not_maths(lm_setup, tmp_path):
    """grad_accum=2 accumulates the minibatch's token-mean gradient exactly, with completions of
    unequal lengths (a plain average of micro-batch means would weight short ones up)."""
    common = {"generation.min_new_tokens": 0, "rollouts": 8, "minibatch_size": 4, "target_coef": 0.1}
    grads, rollout = {}, None
    for accum in (1, 2):
        cfg = rlhf_cfg(lm_setup, tmp_path, experiment=f"accum{accum}", grad_accum=accum, **common)
        trainer = rlhf_trainer(cfg)
        if rollout is None:
            torch.manual_seed(3)
            rollout = trainer.collect(iteration_examples(trainer.train_examples, 0, cfg.rollouts, 0))
        rows = torch.arange(4)
        counts = rollout.mask[rows].sum(1)
        assert counts[:2].sum() != counts[2:].sum(), counts  # the micro-batches hold unequal token counts
        from symrl.advantages import normalize

        used = normalize(rollout.advantages[rows], rollout.mask[rows])
        for part in range(0, 4, 4 // accum):
            with trainer.agent.accelerator.accumulate(trainer.agent.actor):
                share = _shares(rollout, rows, cfg).rows(part, part + 4 // accum)
                trainer._micro_step(rollout, rows[part:part + 4 // accum], used[part:part + 4 // accum], share, {})
        grads[accum] = torch.cat([p.grad.flatten() for p in trainer.agent.actor.parameters() if p.grad is not None])
    assert torch.allclose(grads[1], grads[2], rtol=1e-4, atol=1e-7)


def test_reference_texts_follow_the_prompt(lm_setup, tmp_path):
    """The auxiliary NLL's target follows the prompt: the reference's first max_new_tokens tokens
    (IMDB: the review's start, as TRIL; tests/test_llm_imdb.py)."""
    cfg = rlhf_cfg(lm_setup, tmp_path, **{"generation.max_new_tokens": 4, "generation.min_new_tokens": 4})
    trainer = rlhf_trainer(cfg)
    examples = trainer.train_examples[:3]
    batch = Batch(*encode_prompts(trainer.agent.tokenizer, [e.prompt for e in examples], 6, torch.device("cpu")),
                  torch.zeros((3, 4), dtype=torch.long), torch.ones((3, 4), dtype=torch.long))
    reference = trainer.agent.references(examples, batch)
    for row, example in enumerate(examples):
        ids = trainer.agent.tokenizer(example.reference, add_special_tokens=False)["input_ids"]
        assert reference.continuation[row][reference.continuation_mask[row].bool()].tolist() == ids[:4]


def test_tldr_evaluation_reports_rouge_and_win_rate(lm_setup, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    policy = lm_setup / "models" / "policy"
    tokenizer = AutoTokenizer.from_pretrained(policy)
    config = GPT2Config.from_pretrained(policy, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    rm_dir = tmp_path / "rm"
    GPT2ForSequenceClassification(config).save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)
    posts = tmp_path / "tldr.jsonl"
    posts.write_text("".join(json.dumps({"prompt": f"post {i}: {r['text']}\nTL;DR:", "label": " the plot was dull."})
                             + "\n" for i, r in enumerate(corpus(40))))
    cfg = rlhf_cfg(lm_setup, tmp_path, task="tldr", data=str(posts), iterations=1, eval_every=1, eval_samples=8,
               **{"reward.kind": "reward_model", "reward.model": str(rm_dir), "reward.relative_to_reference": True,
                  "generation.prompt_tokens": 24})
    train_rlhf(cfg, progress=False)
    row = read_jsonl(run_dir(cfg) / "eval.jsonl")[-1]
    assert {"rouge1", "rouge2", "rougeL", "win_rate"} <= set(row)
    # a relative reward is RM(sample) − RM(reference): the sample wins where it is above 0
    scores = [s["reward"] for s in row["samples"]]
    assert len(scores) == cfg.eval_prompts
    assert row["win_rate"] == pytest.approx(sum((s > 0) + 0.5 * (s == 0) for s in scores) / len(scores), abs=1e-3)


@pytest.mark.parametrize("algo", ["ppo", "sppo", "scaled_ppo"])
def test_mean_reward_rises_with_a_learnable_reward(lm_setup, tmp_path, algo):
    cfg = rlhf_cfg(lm_setup, tmp_path, algo=algo, iterations=30, rollouts=16, minibatch_size=8, n_epochs=2,
               kl_coef=0.01, target_coef=0.0, checkpoint_every=30)
    train_rlhf(cfg, progress=False)
    rewards = [row["reward_mean"] for row in read_jsonl(run_dir(cfg) / "metrics.jsonl")]
    assert len(rewards) == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.5, (first, last)
    print(algo, [round(r, 2) for r in rewards])


@pytest.mark.parametrize("variant", [{}, {"policy.lora_r": 4, "policy.lora_alpha": 8},
                                     {"policy.value_head": "separate", "kl_controller": "adaptive"},
                                     {"policy.lora_r": 4, "policy.lora_alpha": 8, "policy.value_head": "adapter",
                                      "norm_adv_scope": "microbatch_padded", "grad_accum": 2},
                                     {"advantage": "grpo", "group_size": 4, "kl_in": "loss", "noise": "reward_flip",
                                      "noise_scale": 0.3, "loss_aggregation": "seq-mean-token-mean",
                                      "clip_range_high": 0.28}],
                         ids=["full", "lora", "critic-adaptive-kl", "lora-value-adapter", "critic-free-noisy"])
def test_killed_run_resumes_to_the_uninterrupted_result(lm_setup, tmp_path, monkeypatch, variant):
    whole = rlhf_cfg(lm_setup, tmp_path, iterations=4, checkpoint_every=2, eval_every=2, experiment="whole", **variant)
    train_rlhf(whole, progress=False)
    killed = rlhf_cfg(lm_setup, tmp_path, iterations=4, checkpoint_every=2, eval_every=2, experiment="killed", **variant)
    original = RLHFTrainer.update
    calls = {"n": 0}

    def dies_in_iteration_four(self, rollout, generator):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, rollout, generator)

    monkeypatch.setattr(RLHFTrainer, "update", dies_in_iteration_four)
    with pytest.raises(KeyboardInterrupt):
        train_rlhf(killed, progress=False)
    monkeypatch.setattr(RLHFTrainer, "update", original)
    assert load_checkpoint(run_dir(killed))["step"] == 2
    train_rlhf(killed, progress=False)
    a, b = checkpoint_tensors(run_dir(whole)), checkpoint_tensors(run_dir(killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any("value_head" in k for k in a) == ("advantage" not in variant)  # critic-free: no value head
    assert not variant.get("policy.lora_r") or any("lora_" in k for k in a)
    assert variant.get("policy.value_head") != "adapter" or any(k.startswith("policy/value_adapter/") for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(run_dir(whole) / "metrics.jsonl")) == strip(read_jsonl(run_dir(killed) / "metrics.jsonl"))
    assert read_jsonl(run_dir(whole) / "eval.jsonl") == read_jsonl(run_dir(killed) / "eval.jsonl")


def test_lora_trains_adapters_against_the_disabled_adapter_reference(lm_setup, tmp_path):
    cfg = rlhf_cfg(lm_setup, tmp_path, **{"policy.lora_r": 4, "policy.lora_alpha": 8, "iterations": 2})
    trainer = rlhf_trainer(cfg)
    assert trainer.agent.reference.model is None  # no copy: the base with adapters off
    lora = {n: p.detach().clone() for n, p in trainer.agent.model.lm.named_parameters() if "lora_" in n}
    base = {n: p.detach().clone() for n, p in trainer.agent.model.lm.named_parameters() if "lora_" not in n}
    rollout = trainer.collect(iteration_examples(trainer.train_examples, 0, cfg.rollouts, 0))
    assert rollout.kl.abs().max() < 1e-5  # LoRA B starts at zero: policy == reference
    trainer.train(progress=False)
    after = dict(trainer.agent.model.lm.named_parameters())
    assert any(not torch.equal(lora[n], after[n]) for n in lora)
    assert all(torch.equal(base[n], after[n]) for n in base)
    assert (run_dir(cfg) / "checkpoints" / load_checkpoint(run_dir(cfg))["folder"] / "policy" /
            "adapter_config.json").exists()


def test_separate_critic_and_run_files(lm_setup, tmp_path):
    second_lm = str(lm_setup / "models" / "policy")
    cfg = rlhf_cfg(lm_setup, tmp_path, **{"policy.value_head": "separate", "iterations": 2, "eval_every": 1,
                                      "eval_samples": 2, "eval_lms": [second_lm], "eval_lms_mode": "per_prompt"})
    summary = train_rlhf(cfg, progress=False)
    path = run_dir(cfg)
    assert summary["finished"] and path == tmp_path / "runs" / "rlhf" / "imdb" / "ppo" / "seed0"
    for name in ("config.yaml", "metrics.jsonl", "eval.jsonl", "summary.json", "tb"):
        assert (path / name).exists(), name
    evals = read_jsonl(path / "eval.jsonl")
    assert [r["step"] for r in evals] == [0, 1, 2]
    assert {"mean_return", "judge_vader", "kl", "ppl_reference", "distinct_1", "distinct_2"} <= set(evals[-1])
    # the second LM is the reference itself here; per prompt, it scores re-tokenized text (the completion's
    # first token may merge differently at the prompt boundary), so the two agree only roughly
    ratio = evals[0]["ppl:" + second_lm] / evals[0]["ppl_reference"]
    assert 0.5 < ratio < 2, ratio
    assert len(evals[-1]["samples"]) == 2 and isinstance(evals[-1]["samples"][0]["completion"], str)
    folder = path / "checkpoints" / load_checkpoint(path)["folder"]
    assert (folder / "critic" / "config.json").exists() and (folder / "value_head.safetensors").exists()
    assert len(list((path / "checkpoints").glob("iter-*"))) == 1


def test_symrl_eval_reevaluates_an_rlhf_checkpoint(lm_setup, tmp_path, capsys, monkeypatch):
    cfg = rlhf_cfg(lm_setup, tmp_path, iterations=1)
    train_rlhf(cfg, progress=False)
    capsys.readouterr()
    with monkeypatch.context() as patch:  # evaluation builds the models, not an optimizer
        patch.setattr(torch.optim, "AdamW", lambda *args, **kwargs: pytest.fail("symrl eval built an optimizer"))
        assert main(["eval", str(run_dir(cfg))]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["checkpoint_step"] == 1 and {"mean_return", "judge_vader", "kl"} <= set(row)
    assert len(read_jsonl(run_dir(cfg) / "eval.jsonl")) == 1  # nothing written to the run
    # the same held-out prompts as in training (and the same samples: evaluation is seeded)
    assert row["mean_return"] == pytest.approx(read_jsonl(run_dir(cfg) / "eval.jsonl")[-1]["mean_return"])
    assert main(["eval", str(run_dir(cfg)), "--episodes", "4"]) == 0
    assert main(["eval", str(run_dir(cfg)), "--episodes", "9"]) == 2  # never beyond the held-out split
    assert "episodes: got 9, allowed: 1..8" in capsys.readouterr().err


def test_hub_id_offline_fails_fast_with_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["rlhf", "--preset", "imdb-sppo", f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "imdb-offline-sppo" in err and "policy." in err, err
    # hub ids with dots are hub ids (not missing files); a missing folder says how to build it
    assert main(["rlhf", f"out={tmp_path}", "policy.model=EleutherAI/pythia-1.4b", "policy.tokenizer=null"]) == 2
    assert "not in the local Hugging Face cache" in capsys.readouterr().err
    assert main(["rlhf", "--preset", "imdb-offline-sppo", f"out={tmp_path}", "policy.model=models/none/policy",
                 "data=tests/llm_reward_fns.py"]) == 2
    assert "symrl lm prepare" in capsys.readouterr().err


def test_bad_rlhf_input_names_the_field(lm_setup, tmp_path):
    with pytest.raises(ConfigError, match="data: .*does not exist"):
        rlhf_cfg(lm_setup, tmp_path, data=str(tmp_path / "missing.jsonl"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="policy.load_in: 4bit needs a CUDA GPU"):
            train_rlhf(rlhf_cfg(lm_setup, tmp_path, **{"policy.load_in": "4bit", "policy.lora_r": 4}), progress=False)
    with pytest.raises(ConfigError, match="policy.load_in: got '8bit' with lora_r=0"):
        rlhf_cfg(lm_setup, tmp_path, **{"policy.load_in": "8bit"})
    with pytest.raises(ConfigError, match=r"grad_accum: got 3, allowed: a divisor of minibatch_size \(4\)"):
        rlhf_cfg(lm_setup, tmp_path, grad_accum=3)


def test_rlhf_presets_resolve_and_accelerate_configs_load(lm_setup):
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    from symrl.config import preset_names

    data = str(lm_setup / "reviews.jsonl")
    cfgs = {name: build_rlhf_config(name, {"data": data} if "offline" in name else {}) for name in preset_names("rlhf")}
    assert {"imdb-ppo", "imdb-sppo", "tldr-ppo", "tldr-sppo", "imdb-offline-ppo", "imdb-offline-sppo",
            "imdb-offline-scaled_ppo"} <= set(cfgs)
    paper = cfgs["imdb-sppo"]
    assert (paper.loss.alpha, paper.loss.beta, paper.lr, paper.kl_coef, paper.target_coef, paper.rollouts,
            paper.minibatch_size, paper.loss.n_epochs, paper.iterations) == (0.5, 0.4, 5e-6, 0.001, 0.1, 112, 28, 5, 60)
    assert (paper.generation.top_k, paper.generation.min_new_tokens, paper.generation.max_new_tokens) == (50, 48, 48)
    tldr = cfgs["tldr-sppo"]
    assert (tldr.loss.alpha, tldr.loss.beta, tldr.loss.gamma, tldr.loss.vf_coef, tldr.kl_coef, tldr.policy.lora_r,
            tldr.policy.load_in, tldr.reward.relative_to_reference) == (0.5, 0.2, 1.0, 0.1, 0.002, 8, "4bit", False)
    for name in ("imdb-offline-sppo", "imdb-offline-scaled_ppo"):  # the control differs only in algo
        assert {k: v for k, v in settings_view(cfgs[name]).items() if k != "algo"} == \
            {k: v for k, v in settings_view(cfgs["imdb-offline-sppo"]).items() if k != "algo"}
    configs = sorted(Path(__file__).parents[1].joinpath("configs", "accelerate").glob("*.yaml"))
    assert [c.stem for c in configs] == ["ddp", "deepspeed_zero2", "fsdp"]
    loaded = [load_config_from_file(str(c)) for c in configs]
    assert [c.distributed_type.value for c in loaded] == ["MULTI_GPU", "DEEPSPEED", "FSDP"]
    assert loaded[2].fsdp_config["fsdp_version"] == 2  # the version symrl rlhf accepts


def test_sweep_runs_rlhf_configs_and_the_report_shows_reward_kl_and_samples(lm_setup, tmp_path):
    import yaml

    from symrl.report import build_report
    from symrl.sweep import run_sweep

    base = {k: v for k, v in settings_view(rlhf_cfg(lm_setup, tmp_path)).items() if k in (
        "data", "generation", "rollouts", "minibatch_size", "n_epochs", "lr", "kl_coef", "device", "out")}
    base.update({"policy.model": str(lm_setup / "models" / "policy"), "policy.tokenizer": None,
                 "reward.kind": "callable", "reward.function": "tests.llm_reward_fns:great_minus_awful",
                 "iterations": 3, "eval_every": 1, "eval_prompts": 8, "experiment": "demo"})
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"command": "rlhf", "base": base,
                                    "grid": {"algo": ["ppo", "sppo"], "seed": [0]}}))
    assert run_sweep(spec, workers=2) == 0
    assert run_sweep(spec, workers=1) == 0  # all finished: nothing runs again
    report = build_report(tmp_path / "runs" / "demo", tmp_path / "report").read_text()
    assert "Sample generations" in report and "judge_vader" in report and "P(X > Y)" in report
    figures = tmp_path / "report" / "figures" / "demo" / "imdb"
    for name in ("learning_curves", "reward_mean", "kl", "judge_vader"):
        assert (figures / f"{name}.png").exists(), name


def test_custom_task_with_a_lexicon_reward(lm_setup, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"review {i}: the film was"}) + "\n" for i in range(24)))
    cfg = rlhf_cfg(lm_setup, tmp_path, task="custom", data=str(prompts), iterations=2, target_coef=0.1,
               **{"reward.kind": "lexicon"})
    summary = train_rlhf(cfg, progress=False)
    rows = read_jsonl(run_dir(cfg) / "metrics.jsonl")
    assert summary["finished"] and len(rows) == 2 and "target_nll" not in rows[0]  # no references: no NLL term
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "reference": 3}) + "\n")
    with pytest.raises(ConfigError, match="data: a record's 'reference' is not a string"):
        train_rlhf(rlhf_cfg(lm_setup, tmp_path, task="custom", data=str(bad), experiment="bad"), progress=False)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_bf16_policy_starts_at_zero_kl_to_its_reference(lm_setup, tmp_path, architecture):
    """Under bf16 autocast, with a sampling temperature: before any update the policy and its frozen
    copy give the same log-probabilities (both divided by the temperature in float32)."""
    model = tiny_llama(lm_setup, tmp_path / "llama") if architecture == "llama" else str(lm_setup / "models" / "policy")
    cfg = rlhf_cfg(lm_setup, tmp_path, iterations=1, mixed_precision="bf16",
               **{"policy.model": model, "generation.temperature": 0.7})
    train_rlhf(cfg, progress=False)
    assert read_jsonl(run_dir(cfg) / "metrics.jsonl")[0]["kl"] == 0.0


@pytest.mark.parametrize("lora", [0, 4])
def test_another_architecture_trains(lm_setup, tmp_path, lora):
    """Not only GPT-2: a tiny Llama (rotary positions, no Conv1D) with its value head and LoRA."""
    cfg = rlhf_cfg(lm_setup, tmp_path, iterations=2, **{"policy.model": tiny_llama(lm_setup, tmp_path / "llama"),
                                                    "policy.lora_r": lora})
    summary = train_rlhf(cfg, progress=False)
    rows = read_jsonl(run_dir(cfg) / "metrics.jsonl")
    assert summary["finished"] and rows[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the policy starts as its reference
    assert all(math.isfinite(r["policy_loss"]) and math.isfinite(r["value_loss"]) for r in rows)


@pytest.mark.parametrize("value_head", ["separate", "shared"])
def test_separate_critic_keeps_value_gradients_out_of_the_policy(lm_setup, tmp_path, value_head):
    """TRIL's IMDB critic is a full copy of the policy LM with its own linear head: one optimizer step
    of the value loss alone (α = 0, no NLL, no entropy, no weight decay) leaves every policy weight
    as it was and moves the critic. With the head on the policy's trunk the same step moves the policy."""
    cfg = rlhf_cfg(lm_setup, tmp_path, alpha=0.0, target_coef=0.0, weight_decay=0.0, rollouts=4, minibatch_size=4,
               n_epochs=1, experiment=value_head, **{"policy.value_head": value_head})
    trainer = rlhf_trainer(cfg)
    model = trainer.agent.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rollout = trainer.collect(iteration_examples(trainer.train_examples, 0, cfg.rollouts, 0))
    trainer.update(rollout, torch.Generator().manual_seed(0))
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert "value_head.weight" in moved
    policy = {f"lm.{n}" for n, _ in model.lm.named_parameters()}
    if value_head == "separate":
        assert not {id(p) for p in model.lm.parameters()} & {id(p) for p in model.critic.parameters()}
        assert not moved & policy and any(n.startswith("critic.") for n in moved)
    else:
        assert moved & policy


def test_adamw_groups_leave_biases_and_layer_norms_undecayed(lm_setup, tmp_path):
    """TRIL's AdamW (agent.py:173-187, cfgs/alg/ppo.yaml:55-60): eps 1e-5, weight decay (IMDB 1e-6)
    on weights only, never on biases and LayerNorm weights; every trainable parameter once."""
    trainer = rlhf_trainer(rlhf_cfg(lm_setup, tmp_path, **{"policy.value_head": "separate"}))
    names = {id(p): n for n, p in trainer.agent.model.named_parameters()}
    decayed, undecayed = ({names[id(p)] for p in group["params"]} for group in trainer.optimizer.param_groups)
    assert [(g["weight_decay"], g["eps"]) for g in trainer.optimizer.param_groups] == [(1e-6, 1e-5), (0.0, 1e-5)]
    assert decayed.isdisjoint(undecayed) and decayed | undecayed == set(names.values())
    assert undecayed == {n for n in names.values() if n.endswith(".bias") or ".ln_" in n}
    assert {"lm.transformer.ln_f.weight", "critic.h.0.ln_1.weight", "value_head.bias"} <= undecayed
    assert {"lm.transformer.wte.weight", "critic.h.0.attn.c_attn.weight", "value_head.weight"} <= decayed


def test_imdb_evaluation_on_the_whole_validation_split_with_tril_metrics(lm_setup, tmp_path):
    """eval_prompts=0: all of the 20% validation split. The reward reads the whole prompt text in
    evaluation and the truncated prompt the policy saw in training; the policy's perplexity on the
    human reviews and the eval LM's on the generations alone are joined-stream perplexities."""
    from symrl.llm import generation, metrics

    eval_lm = str(lm_setup / "models" / "policy")  # the initial policy: both perplexities use the same LM
    cfg = rlhf_cfg(lm_setup, tmp_path, eval_prompts=0, eval_samples=1000, eval_lms=[eval_lm], eval_ppl_stride=16,
               **{"reward.function": "tests.llm_reward_fns:prompt_characters"})
    trainer = rlhf_trainer(cfg)
    assert len(trainer.eval_examples) == 80  # 20% of the 400 reviews
    row = trainer.evaluate()
    assert [s["reward"] for s in row["samples"]] == [float(len(e.prompt)) for e in trainer.eval_examples]
    rollout = trainer.collect(trainer.train_examples[:8])
    seen = generation.decode(trainer.agent.tokenizer, rollout.batch.query, rollout.batch.query_mask)
    assert rollout.scores.tolist() == [float(len(p)) for p in seen]
    assert all(len(p) < len(e.prompt) for p, e in zip(seen, trainer.train_examples[:8]))  # 6 of 8-16 words
    lm, tokenizer = trainer.eval_lms[eval_lm]
    joined = lambda texts: metrics.joined_perplexity(metrics.lm_logprobs(lm), tokenizer, texts, 64, 16)  # noqa: E731
    assert row["ppl_policy_on_references"] == pytest.approx(joined([e.reference for e in trainer.eval_examples]),
                                                             rel=1e-5)
    assert row[f"ppl:{eval_lm}"] == pytest.approx(joined([s["completion"] for s in row["samples"]]), rel=1e-5)


def test_a_diverging_rlhf_run_stops_and_keeps_its_last_good_checkpoint(lm_setup, tmp_path):
    from symrl.run import TrainingDiverged
    from tests import llm_reward_fns

    llm_reward_fns.CALLS["nan_from_third_call"] = 0
    cfg = rlhf_cfg(lm_setup, tmp_path, iterations=4, **{"reward.function": "tests.llm_reward_fns:nan_from_third_call"})
    with pytest.raises(TrainingDiverged, match="diverged at iteration 3: .*not finite.*checkpoint \\(step 2\\) is kept"):
        train_rlhf(cfg)
    path = run_dir(cfg)
    assert load_checkpoint(path)["step"] == 2
    assert all(torch.isfinite(value).all() for value in checkpoint_tensors(path).values())
    assert "diverged" in json.loads((path / "failed.json").read_text())["error"]
    assert not (path / "summary.json").exists()
