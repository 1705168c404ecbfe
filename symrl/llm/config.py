"""Configuration of ``symrl rlhf``: one typed dataclass, presets in ``symrl/presets/rlhf/``.

It shares the key=value parsing, presets with ``extends:`` and error style of ``symrl train``
(:mod:`symrl.config`); the defaults are the paper's IMDB setting (PAPER.md §4).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from symrl.config import LossConfig, apply, check_choice, require, resolve_loss, setting
from symrl.paths import looked_for, resolve_path

ALGOS = ("ppo", "sppo", "scaled_ppo", "a2c", "sa2c")  # a2c, sa2c: the logprob (REINFORCE) form
CHOICES: dict[str, tuple[str, ...]] = {
    "algo": ALGOS,
    "task": ("imdb", "tldr", "custom", "arithmetic", "gsm8k"),
    "reverse_kind": ("rce", "mae"),
    "kl_controller": ("fixed", "adaptive"),
    "device": ("auto", "cpu", "cuda"),
    "mixed_precision": ("auto", "no", "bf16", "fp16"),
    "policy.value_head": ("shared", "separate", "adapter", "none"),
    "advantage": ("gae", "grpo", "rloo", "drgrpo"),
    "loss_aggregation": ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"),
    "kl_in": ("reward", "loss", "off"),
    "noise": ("none", "reward_flip", "gaussian", "uniform"),
    "policy.load_in": ("full", "8bit", "4bit"),
    "reward.kind": ("classifier", "reward_model", "lexicon", "callable", "adapter"),
    "norm_adv_scope": ("minibatch_tokens", "microbatch_padded"),
    "reward.score": ("probability", "logit"),
    "eval_lms_mode": ("joined", "per_prompt"),
    "eval_reward_prompt": ("full", "truncated"),
}
SYMMETRIC_DEFAULTS = {"ppo": (1.0, 0.0), "sppo": (0.5, 0.4), "scaled_ppo": (0.5, 0.4), "a2c": (1.0, 0.0),
                      "sa2c": (0.5, 0.4)}
# Where each task's data comes from when `data` is not given (users with internet).
HUB_DATASETS = {"imdb": "stanfordnlp/imdb", "tldr": "CarperAI/openai_summarize_tldr", "gsm8k": "openai/gsm8k"}


@dataclass
class PolicyConfig:
    """The policy LM, its value function and the frozen reference of the KL penalty."""

    model: str = setting("rajkumarrrk/gpt2-fine-tuned-on-imdb-positive-reviews", "the policy: a hub id or a folder")
    tokenizer: str | None = setting(None, "its tokenizer (null: the model's own)")
    value_head: str = setting("auto", "a linear head on the policy's last hidden state (shared), on a "
                                               "separate critic LM (separate), on the frozen LoRA base with a value "
                                               "adapter (adapter: TRIL's TL;DR critic), or none; auto: shared with "
                                               "advantage=gae, none with a critic-free advantage")
    critic_model: str | None = setting(None, "the separate critic's trunk (null: the policy model)")
    reference_model: str | None = setting(None, "the KL reference (null: a frozen copy of the policy; the LoRA "
                                                "base when lora_r > 0)")
    lora_r: int = setting(0, "LoRA rank (0: full fine-tuning)")
    lora_alpha: float = setting(64.0, "LoRA α")
    lora_dropout: float = setting(0.0, "written into the adapters' config; acts only with lora_dropout_in_updates")
    lora_dropout_in_updates: bool = setting(False, "false: inert, as TRIL (eval mode in every forward); true: on "
                                                   "in updates")
    lora_target_modules: list[str] | None = setting(None, "LoRA's modules (null: peft's default for the "
                                                          "architecture)")
    load_in: str = setting("full", "8bit / 4bit: bitsandbytes on a CUDA GPU, with LoRA")


@dataclass
class GenerationConfig:
    """Sampling of the rollouts (the paper: top-k 50, exactly 48 new tokens)."""

    prompt_tokens: int = setting(64, "a longer prompt keeps its last tokens (IMDB: of the review's first half)")
    max_new_tokens: int = setting(48, "tokens generated at most")
    min_new_tokens: int = setting(48, "tokens generated at least")
    top_k: int = setting(50, "sample among the k likeliest tokens")
    top_p: float = setting(1.0, "nucleus sampling's mass")
    temperature: float = setting(1.0, "sampling temperature (log-probabilities are taken at it too)")
    eval_greedy: bool = setting(False, "evaluation decodes greedily (TRIL's TL;DR) instead of sampling")


@dataclass
class RewardConfig:
    """The sequence-level score added at the last generated token (see ``symrl.llm.rewards``)."""

    kind: str = setting("classifier", "what scores a completion")
    model: str | None = setting("lvwerra/distilbert-imdb", "the classifier / reward model: a hub id or a folder")
    label: str = setting("POSITIVE", "the classifier label whose score is the reward")
    score: str = setting("probability", "classifier: softmax probability of the label (TRIL's IMDB reward) or "
                                        "its logit")
    relative_to_reference: bool = setting(False, "reward_model, adapter: RM(sample) − RM(reference)")
    function: str | None = setting(None, "callable: 'package.module:function'")
    batch_size: int = setting(32, "texts scored per forward")


def _rlhf_loss() -> LossConfig:
    """The paper's IMDB setting (TRIL's PPO): clipped value loss with TRIL's 0.5 in front, grad norm 1."""
    return LossConfig(algo="sppo", clip_range_vf=0.2, value_loss_scale=0.5, max_grad_norm=1.0, n_epochs=5,
                      gae_lambda=0.95)


@dataclass
class RLHFConfig:
    """One RLHF run; ``None`` means "the algorithm's default" (see ``resolve_rlhf``)."""

    task: str = setting("imdb", "imdb, tldr, arithmetic (offline verifiable problems), gsm8k (grade-school math "
                                "word problems: the hub's openai/gsm8k, or a JSONL of question/answer lines in "
                                "`data`), or custom (a JSONL of prompts in `data`)")
    data: str | None = setting(None, "a local JSONL(.gz); null: the task's hub dataset")
    seed: int = setting(0, "seeds the value head, sampling, minibatches and the imdb split")
    iterations: int = setting(60, "rollout + update iterations")
    rollouts: int = setting(112, "trajectories per iteration")
    minibatch_size: int = setting(28, "trajectories per optimizer step")
    grad_accum: int = setting(1, "micro-batches per minibatch: memory, not maths (token-weighted accumulation)")
    group_size: int = setting(1, "completions sampled per prompt (rollouts / group_size prompts per iteration)")
    advantage: str = setting("gae", "gae (a critic), or critic-free from each prompt's group of completions: grpo "
                                    "(group mean and std), rloo (leave-one-out mean), drgrpo (group mean, no std)")
    loss_aggregation: str = setting("token-mean", "token-mean over the minibatch's tokens, seq-mean-token-mean "
                                                  "(each sequence's token mean, averaged), or seq-mean-token-sum-norm "
                                                  "(token sums / max_new_tokens, averaged: Dr. GRPO)")
    noise: str = setting("none", "noise on the training rewards: reward_flip (r ← 1 − r with probability "
                                 "noise_scale, for 0/1 rewards), gaussian, uniform; evaluation stays clean")
    noise_scale: float = setting(0.0, "the noise's probability or scale")
    loss: LossConfig = setting(factory=_rlhf_loss, doc="the loss and the update")
    lr: float = setting(5e-6, "AdamW's learning rate")
    weight_decay: float = setting(1e-6, "AdamW's; never on biases and normalization weights (TRIL's groups)")
    adam_eps: float = setting(1e-5, "AdamW's eps (TRIL's; torch's default is 1e-8)")
    norm_adv_scope: str = setting("minibatch_tokens", "whitening statistics: the valid tokens of each minibatch "
                                                      "(padding stays 0), or TRIL's microbatch_padded (every "
                                                      "position of each micro-batch, padding zeros included)")
    kl_coef: float = setting(0.001, "weight of the KL penalty (kl_in)")
    kl_in: str | None = setting(None, "the KL to the reference: per token in the reward, in the loss (k3 "
                                      "estimator), or off (default: reward with advantage=gae, off otherwise)")
    kl_controller: str = setting("fixed", "fixed, or adaptive (Ziegler et al. 2019)")
    kl_target: float = setting(6.0, "adaptive controller: target KL per sequence")
    kl_horizon: int = setting(10_000, "adaptive controller: its horizon in trajectories")
    target_coef: float = setting(0.1, "weight of the auxiliary NLL on the reference texts")
    policy: PolicyConfig = setting(factory=PolicyConfig, doc="the policy")
    generation: GenerationConfig = setting(factory=GenerationConfig, doc="sampling")
    reward: RewardConfig = setting(factory=RewardConfig, doc="the reward")
    eval_every: int = setting(10, "iterations between evaluations on held-out prompts (0: only at the end)")
    eval_prompts: int = setting(64, "the first this many held-out prompts; 0: all (imdb: its 20% validation part)")
    eval_reward_prompt: str = setting("full", "full: the reward reads the whole prompt (TRIL's evaluation); "
                                              "truncated: the <= prompt_tokens tokens the policy saw")
    eval_lms: list[str] = setting(factory=list, doc="LMs scoring the generations (the paper: lvwerra/gpt2-imdb)")
    eval_lms_mode: str = setting("joined", "joined: the generations alone, joined, in sliding windows (TRIL); "
                                           "per_prompt: each given its prompt")
    eval_ppl_stride: int = setting(512, "stride of the sliding windows (TRIL: 512 in GPT-2's 1024 positions)")
    eval_samples: int = setting(4, "generations shown in eval.jsonl")
    out: str = setting("runs", "root folder of run directories")
    experiment: str = setting("rlhf", "run directories are out/experiment/task/algo/seed<k>")
    checkpoint_every: int = setting(10, "iterations between checkpoints")
    device: str = setting("auto", "auto, cpu or cuda")
    mixed_precision: str = setting("auto", "auto: what `accelerate launch` / its config says, else none")

    @property
    def subject(self) -> str:
        return self.task

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_rlhf_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> RLHFConfig:
    """Defaults ← preset (``symrl/presets/rlhf``) ← overrides, then resolved and validated."""
    return resolve_rlhf(apply(RLHFConfig(), "rlhf", preset, overrides))


def resolve_rlhf(cfg: RLHFConfig) -> RLHFConfig:
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy), loss=dataclasses.replace(cfg.loss),
                              generation=dataclasses.replace(cfg.generation), reward=dataclasses.replace(cfg.reward))
    for key in ("task", "kl_controller", "device", "mixed_precision", "eval_lms_mode",
                "eval_reward_prompt"):
        check_choice(key, getattr(cfg, key), CHOICES)
    check_choice("policy.load_in", cfg.policy.load_in, CHOICES)
    check_choice("reward.kind", cfg.reward.kind, CHOICES)
    check_choice("norm_adv_scope", cfg.norm_adv_scope, CHOICES)
    check_choice("reward.score", cfg.reward.score, CHOICES)
    require(cfg.loss.target_kl is None, f"target_kl: got {cfg.loss.target_kl}, allowed: null (symrl rlhf has no "
                                         "KL early stop; its KL penalty is kl_coef)")
    for key in ("advantage", "loss_aggregation", "noise"):
        check_choice(key, getattr(cfg, key), CHOICES)
    critic_free = cfg.advantage != "gae"
    if cfg.kl_in is None:
        cfg.kl_in = "off" if critic_free else "reward"
    check_choice("kl_in", cfg.kl_in, CHOICES)
    if cfg.policy.value_head == "auto":
        cfg.policy.value_head = "none" if critic_free else "shared"
    check_choice("policy.value_head", cfg.policy.value_head, CHOICES)
    if cfg.loss.norm_adv is None:  # group advantages are already normalized (grpo) or meant raw
        cfg.loss.norm_adv = not critic_free
    if critic_free:
        require(cfg.policy.value_head == "none", f"policy.value_head: got {cfg.policy.value_head!r} with "
                f"advantage={cfg.advantage}, which needs no critic; allowed: none (or advantage=gae)")
        require(cfg.kl_in != "reward", f"kl_in: got 'reward' with advantage={cfg.advantage}, whose group advantages "
                "read only the sequence scores; allowed: loss or off")
        require(cfg.group_size >= 2, f"group_size: got {cfg.group_size} with advantage={cfg.advantage}; allowed: "
                "an integer >= 2 (completions per prompt)")
    else:
        require(cfg.policy.value_head != "none", "policy.value_head: got 'none' with advantage=gae, which needs a "
                "critic; allowed: shared, separate, adapter (or a critic-free advantage: grpo, rloo, drgrpo)")
    resolve_loss(cfg.loss, SYMMETRIC_DEFAULTS, CHOICES)
    if cfg.loss.family == "a2c":  # the logprob form has no ratio: its gradient is only right on-policy
        require(cfg.loss.n_epochs == 1 and cfg.minibatch_size == cfg.rollouts,
                f"n_epochs, minibatch_size: got {cfg.loss.n_epochs}, {cfg.minibatch_size} with algo={cfg.loss.algo} "
                f"(the logprob form: one on-policy step); allowed: n_epochs=1, minibatch_size={cfg.rollouts} "
                "(rollouts)")
    _validate(cfg)
    return cfg


def _positive_ints(cfg: Any, prefix: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        value = getattr(cfg, key)
        require(value >= 1, f"{prefix}{key}: got {value}, allowed: an integer >= 1")


def _validate(cfg: RLHFConfig) -> None:
    require(cfg.lr > 0, f"lr: got {cfg.lr:g}, allowed: a number > 0")
    require(cfg.seed >= 0, f"seed: got {cfg.seed}, allowed: an integer >= 0 (it also shuffles the imdb split)")
    _positive_ints(cfg, "", ("iterations", "rollouts", "minibatch_size", "grad_accum", "group_size",
                             "checkpoint_every", "kl_horizon", "eval_ppl_stride"))
    require(cfg.rollouts % cfg.group_size == 0,
            f"group_size: got {cfg.group_size}, allowed: a divisor of rollouts ({cfg.rollouts})")
    if cfg.noise == "reward_flip":
        require(0 <= cfg.noise_scale <= 1, f"noise_scale: got {cfg.noise_scale:g} for noise=reward_flip, allowed: "
                "a probability 0..1")
    else:
        require(cfg.noise_scale >= 0, f"noise_scale: got {cfg.noise_scale:g}, allowed: a number >= 0")
    require(cfg.eval_prompts >= 1 or (cfg.eval_prompts == 0 and cfg.task == "imdb"),
            f"eval_prompts: got {cfg.eval_prompts}, allowed: an integer >= 1, or 0 (the whole validation split) "
            "with task=imdb")
    require(cfg.rollouts % cfg.minibatch_size == 0,
            f"minibatch_size: got {cfg.minibatch_size}, allowed: a divisor of rollouts ({cfg.rollouts})")
    require(cfg.minibatch_size % cfg.grad_accum == 0,
            f"grad_accum: got {cfg.grad_accum}, allowed: a divisor of minibatch_size ({cfg.minibatch_size})")
    require(cfg.eval_every >= 0, f"eval_every: got {cfg.eval_every}, allowed: 0 (only at the end) or iterations >= 1")
    require(cfg.eval_samples >= 0, f"eval_samples: got {cfg.eval_samples}, allowed: an integer >= 0")
    require(cfg.kl_target > 0, f"kl_target: got {cfg.kl_target:g}, allowed: a number > 0")
    require(cfg.adam_eps > 0, f"adam_eps: got {cfg.adam_eps:g}, allowed: a number > 0 (TRIL: 1e-5)")
    for key in ("kl_coef", "target_coef", "weight_decay"):
        require(getattr(cfg, key) >= 0, f"{key}: got {getattr(cfg, key):g}, allowed: a number >= 0")
    g = cfg.generation
    _positive_ints(g, "generation.", ("prompt_tokens", "max_new_tokens", "top_k"))
    require(0 <= g.min_new_tokens <= g.max_new_tokens,
            f"generation.min_new_tokens: got {g.min_new_tokens}, allowed: 0..{g.max_new_tokens} (max_new_tokens)")
    require(0 < g.top_p <= 1, f"generation.top_p: got {g.top_p:g}, allowed: 0 < top_p <= 1")
    require(g.temperature > 0, f"generation.temperature: got {g.temperature:g}, allowed: a number > 0")
    p = cfg.policy
    require(p.lora_r >= 0, f"policy.lora_r: got {p.lora_r}, allowed: 0 (full fine-tuning) or a rank >= 1")
    require(0 <= p.lora_dropout < 1, f"policy.lora_dropout: got {p.lora_dropout:g}, allowed: 0 <= lora_dropout < 1")
    require(p.load_in == "full" or p.lora_r > 0,
            f"policy.load_in: got {p.load_in!r} with lora_r=0; allowed: full, or set policy.lora_r "
            "(a quantized model trains through LoRA adapters)")
    r = cfg.reward
    require(r.batch_size >= 1, f"reward.batch_size: got {r.batch_size}, allowed: an integer >= 1")
    require(p.value_head != "adapter" or p.lora_r > 0,
            "policy.value_head: got 'adapter' with lora_r=0; allowed: shared or separate, or set policy.lora_r "
            "(the value adapter sits beside the policy's LoRA adapter)")
    require(r.kind != "adapter" or p.lora_r > 0,
            "reward.kind: got 'adapter' with policy.lora_r=0; allowed: another kind, or set policy.lora_r "
            "(the reward adapter goes onto the policy's frozen LoRA base)")
    if r.kind in ("classifier", "reward_model", "adapter"):
        require(bool(r.model), f"reward.model: required for reward.kind={r.kind}; allowed: a hub id or a local folder")
    if r.kind == "callable":
        require(bool(r.function) and ":" in r.function,
                f"reward.function: got {r.function!r}, allowed: 'package.module:function' for reward.kind=callable")
    if r.relative_to_reference:
        require(r.kind in ("reward_model", "adapter"),
                "reward.relative_to_reference: allowed only with reward.kind=reward_model or adapter")
    require(cfg.task != "custom" or bool(cfg.data),
            "data: required for task=custom; allowed: a JSONL file with a 'prompt' per line")
    require(not cfg.data or resolve_path(cfg.data).is_file(),
            f"data: {cfg.data!r} does not exist ({looked_for(cfg.data or '')}); allowed: a .jsonl or .jsonl.gz file "
            "(or null for the task's hub dataset)")
    require(bool(cfg.experiment) and "/" not in cfg.experiment,
            f"experiment: got {cfg.experiment!r}, allowed: a non-empty name without '/'")

