"""Configuration of ``symrl rlhf``: one typed dataclass, presets in ``symrl/presets/rlhf/``.

It shares the key=value parsing, presets with ``extends:`` and error style of ``symrl train``
(:mod:`symrl.config`); the defaults are the paper's IMDB setting (PAPER.md §4).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symrl.config import apply, check_choice, check_loss_settings, require

ALGOS = ("ppo", "sppo", "scaled_ppo")
CHOICES: dict[str, tuple[str, ...]] = {
    "algo": ALGOS,
    "task": ("imdb", "tldr", "custom"),
    "reverse": ("rce", "mae"),
    "kl_controller": ("fixed", "adaptive"),
    "device": ("auto", "cpu", "cuda"),
    "mixed_precision": ("auto", "no", "bf16", "fp16"),
    "policy.value_head": ("shared", "separate", "adapter"),
    "policy.load_in": ("full", "8bit", "4bit"),
    "reward.kind": ("classifier", "reward_model", "lexicon", "callable", "adapter"),
    "norm_adv_scope": ("minibatch_tokens", "microbatch_padded"),
    "reward.score": ("probability", "logit"),
    "eval_lms_mode": ("joined", "per_prompt"),
    "eval_reward_prompt": ("full", "truncated"),
}
SYMMETRIC_DEFAULTS = {"ppo": (1.0, 0.0), "sppo": (0.5, 0.4), "scaled_ppo": (0.5, 0.4)}
# Where each task's data comes from when `data` is not given (users with internet).
HUB_DATASETS = {"imdb": "stanfordnlp/imdb", "tldr": "CarperAI/openai_summarize_tldr"}


@dataclass
class PolicyConfig:
    """The policy LM, its value function and the frozen reference of the KL penalty."""

    model: str = "rajkumarrrk/gpt2-fine-tuned-on-imdb-positive-reviews"
    tokenizer: str | None = None  # None: the model's own
    # a linear head on the policy's last hidden state (shared), on a separate critic LM (separate), or
    # on the frozen LoRA base run with a second, value LoRA adapter (adapter: TRIL's TL;DR critic)
    value_head: str = "shared"
    critic_model: str | None = None  # the separate critic's trunk (default: the policy model)
    reference_model: str | None = None  # None: a frozen copy of the policy (the LoRA base when lora_r > 0)
    lora_r: int = 0  # 0: full fine-tuning
    lora_alpha: float = 64.0
    lora_dropout: float = 0.0  # written into the adapters' config; acts only with lora_dropout_in_updates
    lora_dropout_in_updates: bool = False  # false: inert, as TRIL (eval mode in every forward); true: on in updates
    lora_target_modules: list[str] | None = None  # None: peft's default for the architecture
    load_in: str = "full"  # 8bit / 4bit: bitsandbytes on a CUDA GPU, with LoRA


@dataclass
class GenerationConfig:
    """Sampling of the rollouts (the paper: top-k 50, exactly 48 new tokens)."""

    prompt_tokens: int = 64  # a prompt longer than this keeps its last tokens (IMDB: of the review's first half)
    max_new_tokens: int = 48
    min_new_tokens: int = 48
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 1.0
    eval_greedy: bool = False  # evaluation decodes greedily (TRIL's TL;DR) instead of sampling as in training


@dataclass
class RewardConfig:
    """The sequence-level score added at the last generated token (see ``symrl.llm.rewards``)."""

    kind: str = "classifier"
    model: str | None = "lvwerra/distilbert-imdb"
    label: str = "POSITIVE"  # the classifier label whose score is the reward
    score: str = "probability"  # classifier: softmax probability of the label (TRIL's IMDB reward) or its logit
    relative_to_reference: bool = False  # reward_model, adapter: RM(sample) − RM(reference)
    function: str | None = None  # callable: "package.module:function"
    batch_size: int = 32


@dataclass
class RLHFConfig:
    """One RLHF run; ``None`` means "the algorithm's default" (see ``resolve_rlhf``)."""

    algo: str = "sppo"
    task: str = "imdb"
    data: str | None = None  # a local JSONL(.gz); None: the task's hub dataset
    seed: int = 0
    iterations: int = 60
    rollouts: int = 112  # trajectories per iteration
    minibatch_size: int = 28
    grad_accum: int = 1  # micro-batches per minibatch: memory, not maths (token-weighted accumulation)
    n_epochs: int = 5
    # the symmetric loss: α·L_pg + β·L_rev per token
    alpha: float | None = None
    beta: float | None = None
    Z: float = -1.0
    reverse: str = "rce"
    # PPO
    lr: float = 5e-6
    weight_decay: float = 1e-6  # AdamW's; never on biases and normalization weights (TRIL's parameter groups)
    adam_eps: float = 1e-5  # TRIL's AdamW eps (torch's default is 1e-8)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_range_vf: float | None = 0.2
    vf_coef: float = 0.5
    value_loss_scale: float = 0.5  # TRIL's 0.5·max((v−R)², (clip(v)−R)²); symrl train's default is 1 (SB3)
    ent_coef: float = 0.0
    max_grad_norm: float = 1.0
    norm_adv: bool = True  # advantage whitening, over the statistics of norm_adv_scope
    # minibatch_tokens: the valid tokens of each minibatch (padding stays 0); microbatch_padded: every
    # position of each micro-batch's rows × max_new_tokens tensor, padding zeros included (TRIL)
    norm_adv_scope: str = "minibatch_tokens"
    # KL penalty folded into the per-token reward, and the auxiliary NLL on reference texts
    kl_coef: float = 0.001
    kl_controller: str = "fixed"
    kl_target: float = 6.0  # adaptive controller (Ziegler et al. 2019): target KL per sequence
    kl_horizon: int = 10_000
    target_coef: float = 0.1
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    # evaluation on held-out prompts (and at iteration 0)
    eval_every: int = 10  # iterations; 0: only at the end
    eval_prompts: int = 64  # the first this many of the held-out split; 0: all of it (imdb: its 20% validation part)
    # full: the reward reads the whole prompt text + completion (TRIL's evaluation); truncated: the
    # ≤ prompt_tokens tokens the policy saw + completion (as every training reward does)
    eval_reward_prompt: str = "full"
    eval_lms: list[str] = field(default_factory=list)  # LMs scoring the generations (the paper: lvwerra/gpt2-imdb)
    # joined: the generations alone, "\n\n"-joined, in sliding windows (TRIL); per_prompt: each given its prompt
    eval_lms_mode: str = "joined"
    eval_ppl_stride: int = 512  # stride of the sliding windows (TRIL: 512 in GPT-2's 1024 positions)
    eval_samples: int = 4  # generations shown in eval.jsonl
    # run directory and devices
    out: str = "runs"
    experiment: str = "rlhf"
    checkpoint_every: int = 10  # iterations
    device: str = "auto"
    mixed_precision: str = "auto"  # auto: what `accelerate launch` / its config says, else none

    @property
    def subject(self) -> str:
        return self.task

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_rlhf_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> RLHFConfig:
    """Defaults ← preset (``symrl/presets/rlhf``) ← overrides, then resolved and validated."""
    return resolve_rlhf(apply(RLHFConfig(), "rlhf", preset, overrides))


def resolve_rlhf(cfg: RLHFConfig) -> RLHFConfig:
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy),
                              generation=dataclasses.replace(cfg.generation), reward=dataclasses.replace(cfg.reward))
    for key in ("algo", "task", "reverse", "kl_controller", "device", "mixed_precision", "eval_lms_mode",
                "eval_reward_prompt"):
        check_choice(key, getattr(cfg, key), CHOICES)
    for key in ("value_head", "load_in"):
        check_choice(f"policy.{key}", getattr(cfg.policy, key), CHOICES)
    check_choice("reward.kind", cfg.reward.kind, CHOICES)
    check_choice("norm_adv_scope", cfg.norm_adv_scope, CHOICES)
    check_choice("reward.score", cfg.reward.score, CHOICES)
    alpha, beta = SYMMETRIC_DEFAULTS[cfg.algo]
    cfg.alpha = alpha if cfg.alpha is None else cfg.alpha
    cfg.beta = beta if cfg.beta is None else cfg.beta
    _validate(cfg)
    return cfg


def _positive_ints(cfg: Any, prefix: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        value = getattr(cfg, key)
        require(value >= 1, f"{prefix}{key}: got {value}, allowed: an integer >= 1")


def _validate(cfg: RLHFConfig) -> None:
    check_loss_settings(cfg)
    require(cfg.seed >= 0, f"seed: got {cfg.seed}, allowed: an integer >= 0 (it also shuffles the imdb split)")
    _positive_ints(cfg, "", ("iterations", "rollouts", "minibatch_size", "grad_accum", "n_epochs",
                             "checkpoint_every", "kl_horizon", "eval_ppl_stride"))
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
    require(not cfg.data or Path(cfg.data).is_file(),
            f"data: {cfg.data!r} does not exist; allowed: a .jsonl or .jsonl.gz file (or null for the task's hub dataset)")
    require(bool(cfg.experiment) and "/" not in cfg.experiment,
            f"experiment: got {cfg.experiment!r}, allowed: a non-empty name without '/'")

