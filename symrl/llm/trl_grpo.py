"""The symmetric RL loss in TRL: ``SymmetricGRPOTrainer`` adds the reverse term to ``GRPOTrainer``'s loss.

Usage (``pip install 'symrl[trl]'``): swap the two TRL classes, set β::

    from datasets import Dataset
    from symrl.llm.arithmetic import problems, reward
    from symrl.llm.trl_grpo import SymmetricGRPOConfig, SymmetricGRPOTrainer, verifiable_reward

    data = Dataset.from_list([{"prompt": p.prompt, "reference": p.reference} for p in problems(0, 256, "train")])
    args = SymmetricGRPOConfig(output_dir="out", symmetric_beta=0.5)  # was GRPOConfig(output_dir="out")
    trainer = SymmetricGRPOTrainer(model="Qwen/Qwen2.5-0.5B", reward_funcs=verifiable_reward(reward),
                                   args=args, train_dataset=data)  # was GRPOTrainer(...)
    trainer.train()

The loss is α·(TRL's own loss, whatever its loss_type, KL and importance sampling) + β·(reverse term),
the reverse term reduced over tokens as TRL reduces its own for ``loss_type``; β = 0 returns TRL's loss
itself. TRL's ``beta`` stays the KL coefficient: the symmetric weights are ``symmetric_alpha`` and
``symmetric_beta``. The ratio form's gradient is |Z|·∇(TRL's clipped objective) token by token (MAE:
2·), so it only rescales TRL's policy gradient (by α + β|Z|) against the KL and entropy terms; the
logprob form reweights each token's REINFORCE gradient by α + β|Z|·π(token) (PAPER.md §2).

Not Self-Play Preference Optimization: TRL and verl call that method SPPO too; "SPPO" here (the
ratio form) is the symmetric PPO of Byun & Perrault (ICML 2025).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from trl import GRPOConfig, GRPOTrainer

from symrl.losses import masked_mean, reverse_per_element, token_weights

FORMS = ("ratio", "logprob")
REVERSES = ("rce", "mae")
# TRL's loss_type → symrl's name for the same reduction over tokens (token_weights); dapo's normalizer,
# the active tokens of the whole accumulated batch, comes from TRL's inputs (see _reduce)
AGGREGATIONS = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm",
                "dapo": "token-mean"}
METRIC = "symmetric/reverse_loss"
_LOGPS = "_get_per_token_logps_and_entropies"  # the GRPOTrainer method whose output the reverse term reuses


@dataclass
class SymmetricGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the symmetric term's settings (TRL's ``beta`` is its KL coefficient)."""

    symmetric_form: str = field(default="ratio", metadata={
        "help": "'ratio': SPPO's reverse term f·(−Â·Z·(1−π))/π_old, f the mask where TRL's clipped objective has a "
                "gradient; 'logprob': SA2C's reverse cross entropy −Â·Z·(1−π) per token."})
    symmetric_alpha: float = field(default=1.0, metadata={
        "help": "α, the weight of TRL's own loss (policy loss, KL and entropy terms alike); >= 0."})
    symmetric_beta: float = field(default=0.0, metadata={
        "help": "β, the weight of the reverse term; >= 0. 0 (default): exactly GRPOTrainer's loss (times α)."})
    symmetric_Z: float = field(default=-1.0, metadata={
        "help": "Z < 0, the number that stands for log 0 in the reverse cross entropy (the paper uses -1)."})
    symmetric_reverse: str = field(default="rce", metadata={
        "help": "'rce': reverse cross entropy; 'mae': mean absolute error (gradient weight 2 in place of |Z|)."})

    def __post_init__(self) -> None:
        _check_symmetric_settings(self)
        super().__post_init__()


def _check_symmetric_settings(args: SymmetricGRPOConfig) -> None:
    """One ValueError naming the field and what it allows, before TRL builds anything (no deep traceback)."""
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    require(args.symmetric_form in FORMS,
            f"symmetric_form: got {args.symmetric_form!r}, allowed: 'ratio', 'logprob'")
    require(args.symmetric_reverse in REVERSES,
            f"symmetric_reverse: got {args.symmetric_reverse!r}, allowed: 'rce', 'mae'")
    require(args.symmetric_Z < 0,
            f"symmetric_Z: got {args.symmetric_Z!r}, allowed: a negative number (Z stands for log 0)")
    require(args.symmetric_alpha >= 0, f"symmetric_alpha: got {args.symmetric_alpha!r}, allowed: a number >= 0")
    require(args.symmetric_beta >= 0, f"symmetric_beta: got {args.symmetric_beta!r}, allowed: a number >= 0 "
                                      "(0: plain GRPOTrainer)")
    require(args.symmetric_alpha > 0 or args.symmetric_beta > 0,
            "symmetric_alpha, symmetric_beta: both 0, nothing would train; allowed: at least one > 0")
    if args.symmetric_beta == 0:
        return  # TRL's loss alone: every TRL setting works
    require(args.loss_type in AGGREGATIONS, f"loss_type: got {args.loss_type!r} with symmetric_beta > 0, allowed: "
                                            f"{', '.join(AGGREGATIONS)}")
    if args.symmetric_form == "ratio":
        require(args.importance_sampling_level == "token", f"importance_sampling_level: got "
                f"{args.importance_sampling_level!r} with symmetric_form='ratio', allowed: 'token' (or 'logprob' form)")
        require(args.delta is None, f"delta: got {args.delta!r} with symmetric_form='ratio', allowed: None "
                                    "(TRL's two-sided clipping is not in the ratio form's mask)")


def verifiable_reward(fn: Callable[[list[str], list[str], list[str | None] | None], list[float]],
                      reference: str = "reference") -> Callable[..., list[float]]:
    """A symrl verifier ``(prompts, completions, references) -> scores`` (``reward.kind=callable``, e.g.
    ``symrl.llm.arithmetic:reward``) as a TRL reward function: TRL passes the prompts, the completions
    and every dataset column by keyword; the references are the column ``reference`` (None without it).
    Conversational examples pass their last message's text."""
    def reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        return fn(_texts(prompts), _texts(completions), columns.get(reference))

    reward.__name__ = getattr(fn, "__name__", "verifiable_reward")  # TRL logs rewards/<name>/mean
    return reward


def _texts(items: list[Any]) -> list[str]:
    """Plain texts as they are; a conversation (a list of messages) as its last message's content."""
    return [item[-1]["content"] if isinstance(item, list) else item for item in items]


class SymmetricGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose loss is α·(TRL's loss) + β·(the reverse term), set by a ``SymmetricGRPOConfig``."""

    def __init__(self, model: Any, reward_funcs: Any = None, args: SymmetricGRPOConfig | None = None, *rest: Any,
                 **kwargs: Any) -> None:
        if not isinstance(args, SymmetricGRPOConfig):
            raise TypeError(f"args: got {type(args).__name__}, allowed: a SymmetricGRPOConfig (GRPOConfig's fields "
                            "plus symmetric_alpha, symmetric_beta, ...)")
        if not all(callable(getattr(GRPOTrainer, name, None)) for name in ("_compute_loss", _LOGPS)):
            # the loss hook: without it β would be silently ignored and training would run as plain GRPO
            raise RuntimeError("trl: this GRPOTrainer has no _compute_loss / _get_per_token_logps_and_entropies; "
                               "allowed: trl>=1.16,<2 (the versions symrl's plug-in is tested with)")
        super().__init__(model, reward_funcs, args, *rest, **kwargs)

    def _compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> Tensor:
        """TRL's loss, computed by TRL, plus the reverse term from the log-probs of TRL's own forward pass."""
        alpha, beta = self.args.symmetric_alpha, self.args.symmetric_beta
        if beta == 0.0:
            loss = super()._compute_loss(model, inputs)
            return loss if alpha == 1.0 else alpha * loss
        with _captured_logps(self) as captured:
            loss = super()._compute_loss(model, inputs)
        reverse, value = self._reverse_loss(inputs, captured["logps"], captured["entropies"])
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][METRIC].append(self.accelerator.gather(value).nanmean().item())
        return (loss if alpha == 1.0 else alpha * loss) + beta * reverse

    def _reverse_loss(self, inputs: dict[str, Any], logps: Tensor, entropies: Tensor | None) -> tuple[Tensor, Tensor]:
        """The reverse term over TRL's tokens, with the advantages, mask and old log-probs TRL's loss used."""
        mask = _completion_mask(inputs)
        advantages = inputs["advantages"]
        advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        args = self.args
        per_token = reverse_per_element(logps, advantages, args.symmetric_reverse, args.symmetric_Z,
                                        old if args.symmetric_form == "ratio" else None,
                                        self.epsilon_low, self.epsilon_high)
        per_token = per_token * self._trl_token_factors(inputs, logps, entropies, advantages, old, mask)
        return self._reduce(per_token, mask, inputs)

    def _trl_token_factors(self, inputs: dict[str, Any], logps: Tensor, entropies: Tensor | None, advantages: Tensor,
                           old: Tensor, mask: Tensor) -> Tensor:
        """What TRL multiplies its own per-token loss by (its off-policy sequence mask, its high-entropy token
        mask, vLLM's importance-sampling ratio), from TRL's own methods: the reverse term then acts on the
        same tokens with the same weights, and the ratio form stays |Z|·TRL's gradient."""
        factors = torch.ones_like(logps)
        if self.off_policy_mask_threshold is not None:
            sampling = inputs.get("sampling_per_token_logps", old)
            factors = factors * self.get_off_policy_mask(advantages, logps, sampling, mask,
                                                         self.off_policy_mask_threshold)
        if self.top_entropy_quantile < 1.0:
            factors = factors * self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)
        if self.use_vllm and self.vllm_importance_sampling_correction:
            factors = factors * inputs["importance_sampling_ratio"]
        return factors

    def _reduce(self, per_token: Tensor, mask: Tensor, inputs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(the term to add to TRL's loss, its value to log) reduced as TRL reduces its per-token loss for
        ``loss_type``, gradient-accumulation scaling included (the logged value is before that scaling, as
        TRL logs its policy loss)."""
        training = self.model.training
        weights, normalizer = token_weights(mask, AGGREGATIONS[self.loss_type], self.max_completion_length)
        accumulation = self.current_gradient_accumulation_steps if training else 1
        if self.loss_type == "dapo":  # the active tokens of the generation batch, rescaled to one accumulation window
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if training:
                normalizer = normalizer * accumulation / self.args.steps_per_generation
            accumulation = 1
        value = masked_mean(per_token, weights) * (weights.sum() / normalizer)
        return value / accumulation, value.detach()


def _completion_mask(inputs: dict[str, Any]) -> Tensor:
    """The tokens TRL's loss counts: the completion's, less tool outputs when there are any."""
    mask = inputs["completion_mask"]
    return mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]


@contextmanager
def _captured_logps(trainer: GRPOTrainer) -> Iterator[dict[str, Tensor | None]]:
    """Records what TRL's per-token log-prob method returns while TRL computes its loss, so the reverse
    term reuses that forward pass (log-probs with their graph, entropies) rather than running a second."""
    compute = getattr(trainer, _LOGPS)
    own = vars(trainer).get(_LOGPS)  # an instance-level replacement to put back (e.g. a test's)
    captured: dict[str, Tensor | None] = {}

    def capture(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
        out = compute(*args, **kwargs)
        captured["logps"], captured["entropies"] = out[0], out[1]
        return out

    setattr(trainer, _LOGPS, capture)
    try:
        yield captured
    finally:
        if own is None:
            delattr(trainer, _LOGPS)
        else:
            setattr(trainer, _LOGPS, own)
    if "logps" not in captured:
        raise RuntimeError(f"TRL's _compute_loss did not call {_LOGPS}: this TRL is not one symrl's plug-in "
                           "supports (trl>=1.16,<2)")
