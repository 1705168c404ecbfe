"""Sequence-level rewards for RLHF: one score per (prompt, completion), given at the end of the sequence.

Every reward is a callable ``reward(prompts, completions, references) -> Tensor`` (float32, CPU,
shape ``(B,)``); ``references`` holds the dataset's reference completion for each prompt (or
``None``) and only rewards that compare against it read it. The trainer folds the per-token KL
penalty in separately, so a reward knows nothing about the policy (the adapter reward only shares
its frozen base).
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from symrl.config import ConfigError, check_choice
from symrl.llm import hub
from symrl.llm.config import CHOICES
from symrl.llm.metrics import vader_judge
from symrl.llm.policy import REWARD_ADAPTER, adapter_scope, evaluating, keeping_trainable, lm_trunk, position_ids

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
    """The score of one label of a text classifier, e.g. POSITIVE of ``lvwerra/distilbert-imdb``.

    ``score="probability"`` (the default) is the label's softmax probability, in [0, 1]: TRIL's IMDB
    reward and metric (``model_rewards.py:68-70``), so reported rewards compare with the paper's.
    ``score="logit"`` is the label's raw logit: unbounded, it keeps a gradient of preference where
    the softmax saturates. The classifier reads prompt + completion, as TRIL and TRL's IMDB example
    do: the completion continues the prompt's review, and the classifier was trained on whole reviews.
    ``label`` is a name of ``config.id2label`` (any case) or an index; ``max_length`` defaults to
    the smaller of the model's positions and the tokenizer's limit, and longer texts keep their end
    (where the completion is), as TRIL's tokenizer does (``truncation_side = "left"``).
    """

    def __init__(self, model: str, label: str | int = "POSITIVE", score: str = "probability", device: str = "cpu",
                 batch_size: int = 32, max_length: int | None = None) -> None:
        check_choice("reward.score", score, CHOICES)
        self.scorer = _SequenceScorer(model, "reward.model", device, batch_size, max_length, truncation_side="left")
        self.label_index = _label_index(label, self.scorer.labels, self.scorer.num_labels)
        self.score = score

    def __call__(self, prompts: list[str], completions: list[str],
                 references: list[str | None] | None = None) -> torch.Tensor:
        _check_lengths(prompts, completions)
        logits = self.scorer.logits([p + c for p, c in zip(prompts, completions)])
        if self.score == "probability":
            logits = torch.softmax(logits, dim=-1)
        return logits[:, self.label_index].contiguous()


class RewardModelReward:
    """A learned scalar reward model (one output) read at the last token of prompt + completion.

    With ``relative_to_reference`` the reward is RM(prompt + sample) − RM(prompt + reference) (an
    option; TRIL's TL;DR reward subtracts nothing): it removes the per-prompt offset of the reward
    model, so the advantage reflects how the sample compares with a human summary of the same post.
    Long inputs lose their first tokens, not their last, because the score is read at the end.
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
        return _scored(lambda texts: self.scorer.logits(texts)[:, 0], prompts, completions, references,
                       self.relative_to_reference)


class _AdapterFolder:
    """An adapter's folder: a local one, or the hub snapshot of its files, so that
    ``hub.from_pretrained`` gives adapters the offline handling and errors of models."""

    @staticmethod
    def from_pretrained(name: str, **kwargs: Any) -> str:
        from huggingface_hub import snapshot_download

        if Path(name).is_dir():
            return name
        return snapshot_download(name, allow_patterns=["adapter_*"], **kwargs)


class AdapterReward:
    """A reward-model LoRA adapter on the policy's own frozen base: TRIL's ``adapter_reward``
    (``model_rewards.py:106-317``), the paper's TL;DR reward (``jdchang/tldr_rm_adapter`` on the SFT
    GPT-J, ``cfgs/task/tldr.yaml:24-28``), loaded onto the policy's model (``agent.py:162-166``).

    Sharing the base spares a second copy of a 6B model, and is exact: under LoRA the base never
    trains. The adapter's file holds LoRA weights, which peft's ``load_adapter`` adds to the policy's
    model as ``reward_adapter``, and a linear ``score`` head, read here from the same file (peft
    ignores it on a causal LM), as TRIL does (``model_rewards.py:145-198``). The input is TRIL's:
    ``"<|startoftext|>" + prompt + completion + "<|endoftext|>"``, its first ``max_length`` = 550
    tokens (TRIL's tokenizer cuts the end, ``model_rewards.py:216-227``); the score is the head on
    the last hidden state at the last token. It is the raw score: TRIL's TL;DR never subtracts the
    reference's (``scale_by_ref=False``, ``agent.py:82-91``); ``relative_to_reference`` does.
    """

    def __init__(self, model: str, lm: torch.nn.Module, tokenizer: Any, relative_to_reference: bool = False,
                 device: str = "cpu", batch_size: int = 32, max_length: int = 550) -> None:
        from peft.utils import load_peft_weights

        folder = hub.from_pretrained(_AdapterFolder, model, field="reward.model")
        head = {key.rsplit(".", 1)[-1]: value for key, value in load_peft_weights(folder).items()
                if ".score." in f".{key}"}
        if "weight" not in head or head["weight"].shape[0] != 1:
            raise ConfigError(f"reward.model: {model!r} holds no one-output 'score' head beside its LoRA weights; "
                              "allowed: a reward adapter saved with its linear score head "
                              "(e.g. jdchang/tldr_rm_adapter)")
        self.score = torch.nn.Linear(head["weight"].shape[1], 1, bias="bias" in head)
        self.score.load_state_dict({k: v.float() for k, v in head.items()})
        self.score.to(device).requires_grad_(False)
        with keeping_trainable(lm):  # loading an adapter re-freezes the others: the policy's stay trainable
            lm.load_adapter(folder, adapter_name=REWARD_ADAPTER, is_trainable=False)
        self.lm = lm
        self.tokenizer = copy.deepcopy(tokenizer)
        self.tokenizer.padding_side = "right"  # the last real token is then at attention_mask.sum() - 1
        self.tokenizer.truncation_side = "right"
        self.relative_to_reference = relative_to_reference
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, prompts: list[str], completions: list[str],
                 references: list[str | None] | None = None) -> torch.Tensor:
        _check_lengths(prompts, completions)
        return _scored(self._scores, prompts, completions, references, self.relative_to_reference)

    @torch.no_grad()
    def _scores(self, texts: list[str]) -> torch.Tensor:
        out = []
        with adapter_scope(self.lm, REWARD_ADAPTER), evaluating(self.lm):
            for start in range(0, len(texts), self.batch_size):
                wrapped = [f"<|startoftext|>{text}<|endoftext|>" for text in texts[start:start + self.batch_size]]
                batch = self.tokenizer(wrapped, return_tensors="pt", padding=True, truncation=True,
                                       max_length=self.max_length)
                ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
                hidden = lm_trunk(self.lm)(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                                           use_cache=False).last_hidden_state
                last = hidden[torch.arange(len(ids), device=hidden.device), mask.sum(1) - 1]
                out.append(self.score(last.float()).squeeze(-1).cpu())
        return torch.cat(out) if out else torch.zeros(0)


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
    "adapter": AdapterReward,
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


def _scored(score: Callable[[list[str]], torch.Tensor], prompts: list[str], completions: list[str],
            references: list[str | None] | None, relative: bool) -> torch.Tensor:
    """``score(prompt + completion)``; when ``relative``, minus ``score(prompt + reference)`` of the
    same prompt (scored in the same batches)."""
    texts = [p + c for p, c in zip(prompts, completions)]
    if not relative:
        return score(texts).contiguous()
    if references is None or len(references) != len(prompts) or any(r is None for r in references):
        raise ConfigError("reward.relative_to_reference: true needs a reference completion for every prompt, "
                          "but the data has none for some; allowed: data with references, or false")
    scores = score(texts + [p + r for p, r in zip(prompts, references)])
    return (scores[:len(texts)] - scores[len(texts):]).contiguous()


def reward_from_config(cfg: Any, device: Any, **shared: Any) -> Reward:
    """The reward of an ``RLHFConfig.reward`` section: the options its kind takes, on ``device``;
    ``shared`` are what the trainer holds that some kinds take too (``lm``, ``tokenizer``)."""
    accepted = inspect.signature(REWARDS[cfg.kind]).parameters
    options = {name: getattr(cfg, name) for name in accepted if hasattr(cfg, name)}
    options.update({name: value for name, value in shared.items() if name in accepted})
    if "device" in accepted:
        options["device"] = str(device)
    return build_reward(cfg.kind, **options)
