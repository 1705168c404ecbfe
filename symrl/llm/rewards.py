"""Sequence-level rewards for RLHF: one score per (prompt, completion), given at the end of the sequence.

Every reward is a callable ``reward(prompts, completions, references) -> Tensor`` (float32, CPU,
shape ``(B,)``); ``references`` holds the dataset's reference completion for each prompt (or
``None``) and only rewards that compare against it read it. The trainer folds the per-token KL
penalty in separately, so a reward knows nothing about the policy.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from symrl.config import ConfigError
from symrl.llm import hub
from symrl.llm.metrics import vader_judge

# A tokenizer without a real limit reports this sentinel (transformers' VERY_LARGE_INTEGER).
_NO_LIMIT = 10**12


class Reward(Protocol):
    def __call__(
        self, prompts: list[str], completions: list[str], references: list[str | None] | None = None
    ) -> torch.Tensor: ...


class _SequenceScorer:
    """A frozen ``AutoModelForSequenceClassification`` and its tokenizer: text in, logits out.

    Decoder classifiers (GPT-2, GPT-J, Llama: a ``score`` head) compute logits at every position
    and transformers keeps those at the rightmost token that differs from ``pad_token_id``. When
    pad and EOS are the same token (the usual fallback) a text that ends in EOS would be read one
    token early, so the per-position logits are taken from the ``score`` head here and read at the
    last attended position instead. Encoder classifiers pool their first token, which right padding
    leaves in place, so their output is used as is.
    """

    def __init__(self, model: str, field: str, device: str, batch_size: int, max_length: int | None,
                 truncation_side: str) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = hub.ensure_pad_token(hub.from_pretrained(AutoTokenizer, model, field=field), model, field)
        self.model = hub.from_pretrained(AutoModelForSequenceClassification, model, field=field)
        # right padding keeps absolute positions (GPT-2) unchanged and the last real token findable
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = truncation_side
        # without it transformers refuses batches larger than one for decoder classifiers
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval().requires_grad_(False)
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length or self._model_max_length()
        self.labels = {int(i): str(name) for i, name in self.model.config.id2label.items()}
        self.num_labels = int(self.model.config.num_labels)

    def _model_max_length(self) -> int | None:
        limits = [getattr(self.model.config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        limits = [int(x) for x in limits if x is not None and x < _NO_LIMIT]
        return min(limits) if limits else None

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), num_labels)`` float32 logits on CPU."""
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start:start + self.batch_size]), return_tensors="pt", padding=True,
                    truncation=self.max_length is not None, max_length=self.max_length,
                ).to(self.device)
                out.append(self._forward(batch).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.num_labels)

    def _forward(self, batch: Any) -> torch.Tensor:
        head = getattr(self.model, "score", None)
        if not isinstance(head, torch.nn.Module):
            return self.model(**batch).logits
        per_position: list[torch.Tensor] = []
        handle = head.register_forward_hook(lambda _module, _inputs, output: per_position.append(output))
        try:
            pooled = self.model(**batch).logits
        finally:
            handle.remove()
        logits = per_position[0]
        if logits.dim() != 3 or logits.shape[1] != batch["input_ids"].shape[1]:
            return pooled  # a head applied after pooling: nothing to re-read
        last = batch["attention_mask"].sum(dim=1) - 1
        return logits[torch.arange(len(last), device=last.device), last]


class ClassifierReward:
    """The logit of one label of a text classifier, e.g. POSITIVE of ``lvwerra/distilbert-imdb``.

    The classifier reads prompt + completion, as TRL's IMDB example does: the completion continues
    the prompt's review, and the classifier was trained on whole reviews. Logits rather than
    probabilities because the logit keeps a gradient of preference where the softmax saturates.
    ``label`` is a name of ``config.id2label`` (any case) or an index; ``max_length`` defaults to
    the smaller of the model's positions and the tokenizer's limit, and longer texts keep their start.
    """

    def __init__(self, model: str, label: str | int = "POSITIVE", device: str = "cpu", batch_size: int = 32,
                 max_length: int | None = None) -> None:
        self.scorer = _SequenceScorer(model, "reward.model", device, batch_size, max_length, truncation_side="right")
        self.label_index = _label_index(label, self.scorer.labels, self.scorer.num_labels)

    def __call__(self, prompts: list[str], completions: list[str],
                 references: list[str | None] | None = None) -> torch.Tensor:
        _check_lengths(prompts, completions)
        texts = [p + c for p, c in zip(prompts, completions)]
        return self.scorer.logits(texts)[:, self.label_index].contiguous()


class RewardModelReward:
    """A learned scalar reward model (one output) read at the last token of prompt + completion.

    With ``relative_to_reference`` the reward is RM(prompt + sample) − RM(prompt + reference), as
    in the TL;DR setting: it removes the per-prompt offset of the reward model, so the advantage
    reflects how the sample compares with a human summary of the same post. Long inputs lose their
    first tokens, not their last, because the score is read at the end.
    """

    def __init__(self, model: str, relative_to_reference: bool = False, device: str = "cpu", batch_size: int = 32,
                 max_length: int | None = None) -> None:
        self.scorer = _SequenceScorer(model, "reward.model", device, batch_size, max_length, truncation_side="left")
        if self.scorer.num_labels != 1:
            raise ConfigError(f"reward.model: {model!r} has {self.scorer.num_labels} outputs, allowed: a reward "
                              "model with one output (num_labels=1); use reward.kind=classifier for a classifier")
        self.relative_to_reference = relative_to_reference

    def __call__(self, prompts: list[str], completions: list[str],
                 references: list[str | None] | None = None) -> torch.Tensor:
        _check_lengths(prompts, completions)
        texts = [p + c for p, c in zip(prompts, completions)]
        if not self.relative_to_reference:
            return self.scorer.logits(texts)[:, 0].contiguous()
        if references is None or len(references) != len(prompts) or any(r is None for r in references):
            raise ConfigError("reward.relative_to_reference: true needs a reference completion for every prompt, "
                              "but the data has none for some; allowed: data with references, or false")
        scores = self.scorer.logits(texts + [p + r for p, r in zip(prompts, references)])[:, 0]
        return (scores[:len(texts)] - scores[len(texts):]).contiguous()


class LexiconReward:
    """VADER compound sentiment of the completion alone, in [-1, 1]; no model, no download.

    The prompt is left out: it is fixed data the policy cannot change, and VADER's compound score
    saturates (x / sqrt(x² + 15) of the summed valence), so a strongly worded prompt would swamp
    the completion's contribution and flatten the reward the policy learns from. The same function
    is the evaluation judge (:func:`symrl.llm.metrics.vader_judge`).
    """

    def __call__(self, prompts: list[str], completions: list[str],
                 references: list[str | None] | None = None) -> torch.Tensor:
        _check_lengths(prompts, completions)
        return torch.tensor(vader_judge(completions), dtype=torch.float32)


class CallableReward:
    """A user function ``"package.module:function"`` with the reward signature.

    It returns one number per completion (a list, array or tensor); the result is checked and
    converted so that a wrong length fails here, not inside the advantage computation.
    """

    def __init__(self, function: str) -> None:
        self.name = function
        self.function = _import_function(function)

    def __call__(self, prompts: list[str], completions: list[str],
                 references: list[str | None] | None = None) -> torch.Tensor:
        _check_lengths(prompts, completions)
        result = self.function(prompts, completions, references)
        try:
            scores = torch.as_tensor(result if isinstance(result, torch.Tensor) else list(result))
            scores = scores.detach().to("cpu", torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(f"reward.function: {self.name} returned {type(result).__name__}, allowed: "
                              "a sequence of numbers or a tensor") from None
        if scores.shape != (len(completions),):
            raise ConfigError(f"reward.function: {self.name} returned shape {tuple(scores.shape)} for "
                              f"{len(completions)} completions; allowed: one number per completion")
        return scores


REWARDS: dict[str, type] = {
    "classifier": ClassifierReward,
    "reward_model": RewardModelReward,
    "lexicon": LexiconReward,
    "callable": CallableReward,
}


def build_reward(kind: str, **options: Any) -> Reward:
    """The reward named by ``reward.kind``, built from the remaining ``reward.*`` options."""
    if kind not in REWARDS:
        raise ConfigError(f"reward.kind: got {kind!r}, allowed: {', '.join(REWARDS)}")
    cls = REWARDS[kind]
    parameters = inspect.signature(cls).parameters
    accepted = list(parameters)
    allowed = ", ".join(f"reward.{name}" for name in accepted) or "none"
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise ConfigError(f"reward.{unknown[0]}: not an option of reward.kind={kind}; allowed: {allowed}")
    missing = [name for name in accepted if parameters[name].default is inspect.Parameter.empty and name not in options]
    if missing:
        raise ConfigError(f"reward.{missing[0]}: required by reward.kind={kind}; options: {allowed}")
    return cls(**options)


def _label_index(label: str | int, labels: dict[int, str], num_labels: int) -> int:
    by_name = {name.lower(): index for index, name in labels.items()}
    if isinstance(label, str) and label.lower() in by_name:
        return by_name[label.lower()]
    if isinstance(label, int) or (isinstance(label, str) and label.strip().isdigit()):
        index = int(label)
        if 0 <= index < num_labels:
            return index
    names = ", ".join(f"{index}={name}" for index, name in sorted(labels.items()))
    raise ConfigError(f"reward.label: got {label!r}, allowed: a label of the model ({names}) or its index")


def _import_function(spec: str) -> Any:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"reward.function: got {spec!r}, allowed: 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"reward.function: cannot import module {module_name!r} ({err}); allowed: a module "
                          "importable from the working directory or the installed packages") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"reward.function: module {module_name!r} has no function {attribute!r}")
    return function


def _check_lengths(prompts: Sequence[str], completions: Sequence[str]) -> None:
    if len(prompts) != len(completions):
        raise ValueError(f"prompts and completions must pair up: got {len(prompts)} and {len(completions)}")


def reward_from_config(cfg: Any, device: Any) -> Reward:
    """The reward of an ``RLHFConfig.reward`` section: the options its kind takes, on ``device``."""
    accepted = inspect.signature(REWARDS[cfg.kind]).parameters
    options = {name: getattr(cfg, name) for name in accepted if hasattr(cfg, name)}
    if "device" in accepted:
        options["device"] = str(device)
    return build_reward(cfg.kind, **options)
