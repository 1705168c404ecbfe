"""``symrl lm prepare``: offline stand-ins for ``gpt2`` and ``lvwerra/distilbert-imdb``, and an arithmetic LM.

Without internet there is no pretrained policy and no reward model. This trains both on a local
review corpus: a byte-level BPE tokenizer, a small GPT-2 pretrained as a causal LM (the policy) and
a small DistilBERT sentiment classifier (the reward: its POSITIVE logit, as in the paper). Each is
saved with ``save_pretrained``, so the RLHF code loads these folders exactly as it loads hub ids:

- ``OUT/policy``: GPT-2 and its tokenizer (left padding, for batched generation);
- ``OUT/classifier``: DistilBERT and its tokenizer (right padding, ``<|endoftext|>`` prepended as the
  first token, whose hidden state DistilBERT classifies, like BERT's ``[CLS]``);
- ``OUT/tokenizer``: the policy's tokenizer alone;
- ``OUT/prepared.json``: what was built and how well; written last, it marks a finished preparation.

``symrl lm prepare --task arithmetic`` (:func:`prepare_arithmetic`) needs no data: it pretrains a
GPT-2 with a byte-level tokenizer (no merges: one token per character, so every digit is its own
token) on worked problems of :mod:`symrl.llm.arithmetic` (``"Q: 37 + 85 = ?\nA: 122"``). The
budget is deliberately short, so the model answers some held-out problems and not others, and RL
has something to improve. ``OUT/policy`` holds it as above, ``OUT/arithmetic.json`` its held-out
accuracy (greedy decoding, read by the task's checker) and ``OUT/prepared.json`` as above.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)
from transformers.utils import logging as hf_logging

from symrl.config import ConfigError
from symrl.device import resolve_device
from symrl.llm import arithmetic, generation
from symrl.llm.config import GenerationConfig
from symrl.llm.data import read_records, texts
from symrl.llm.generation import right_pad
from symrl.paths import resolve_path

EOS = "<|endoftext|>"
PAD = "<|pad|>"
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
VAL_FRACTION = 0.1
MIN_RECORDS = 50
# Bumped when what is built changes meaning, so that older preparations are rebuilt, not reused.
FORMAT = 1
BYTE_VOCAB = 256 + 2  # the byte alphabet and the two special tokens: a byte-level BPE without merges
ANSWER_TOKENS = 8  # new tokens an arithmetic answer gets: " -99" or " 891" and EOS, with room to spare
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LMSize:
    """A GPT-2 policy and its pretraining on mini-batches of ``batch`` rows of at most ``n_positions`` tokens."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    steps: int
    batch: int
    lr: float
    eval_blocks: int  # held-out rows for the validation loss; bounded so evaluation stays cheap
    # True: documents packed into full rows (reviews); False: one document a row, padded (worked
    # problems: each then starts at position 0, as a prompt does when the policy answers it)
    packed: bool = True


@dataclass(frozen=True)
class ModelSize:
    """Everything a size preset fixes: the tokenizer, both architectures and their training budgets."""

    vocab_size: int
    # GPT-2 policy, pretrained on blocks of n_positions tokens
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    lm_steps: int
    lm_batch: int
    lm_lr: float
    lm_eval_blocks: int  # held-out blocks for the validation loss; bounded so evaluation stays cheap
    # DistilBERT sentiment classifier
    clf_layers: int
    clf_dim: int
    clf_heads: int
    clf_hidden: int
    clf_max_len: int
    clf_steps: int
    clf_batch: int
    clf_lr: float

    @property
    def lm(self) -> LMSize:
        return LMSize(self.n_layer, self.n_embd, self.n_head, self.n_positions, self.lm_steps, self.lm_batch,
                      self.lm_lr, self.lm_eval_blocks)


SIZES: dict[str, ModelSize] = {
    # seconds: for tests
    "tiny": ModelSize(vocab_size=512, n_layer=2, n_embd=32, n_head=2, n_positions=64, lm_steps=60,
                      lm_batch=8, lm_lr=3e-3, lm_eval_blocks=16, clf_layers=1, clf_dim=32, clf_heads=2,
                      clf_hidden=64, clf_max_len=64, clf_steps=60, clf_batch=16, clf_lr=3e-3),
    # the default: 3.5 minutes on one CPU thread (AMD EPYC), held-out perplexity ~210, accuracy ~0.80.
    # Tuned at that budget: batches of 2 blocks beat 4 or 8 (more updates, and the 4096-way softmax
    # runs faster in small pieces), 2 layers beat 4, and the classifier stayed at chance with lr 2e-3.
    "small": ModelSize(vocab_size=4096, n_layer=2, n_embd=128, n_head=4, n_positions=256, lm_steps=1700,
                       lm_batch=2, lm_lr=2e-3, lm_eval_blocks=64, clf_layers=2, clf_dim=128, clf_heads=2,
                       clf_hidden=256, clf_max_len=256, clf_steps=300, clf_batch=16, clf_lr=1e-3),
    # ~14M-parameter policy, for a GPU: about 3.5 epochs of the IMDB corpus
    "medium": ModelSize(vocab_size=8192, n_layer=6, n_embd=384, n_head=6, n_positions=256, lm_steps=1500,
                        lm_batch=32, lm_lr=1e-3, lm_eval_blocks=256, clf_layers=4, clf_dim=384, clf_heads=6,
                        clf_hidden=1536, clf_max_len=256, clf_steps=800, clf_batch=32, clf_lr=3e-4),
}


@dataclass(frozen=True)
class ArithmeticSize:
    """The arithmetic policy, its pretraining corpus and how many held-out problems measure it."""

    lm: LMSize
    problems: int  # worked training problems, one a row
    accuracy_problems: int  # held-out problems answered greedily for the accuracy (the first of them)
    answer_noise: float = 0.0  # share of worked answers that are near misses (arithmetic.worked_texts)


ARITHMETIC_SIZES: dict[str, ArithmeticSize] = {
    # seconds: for tests; the accuracy is near 0
    "tiny": ArithmeticSize(LMSize(n_layer=2, n_embd=32, n_head=2, n_positions=64, steps=40, batch=8, lr=3e-3,
                                  eval_blocks=32, packed=False), problems=2000, accuracy_problems=32),
    # the default, 3 minutes on one CPU thread: greedy held-out accuracy 0.56, sampled (T=1) ~0.30: 40% of the
    # worked answers are near misses (answer_noise), so the model keeps mass on them, which RL with the exact
    # checker takes away (GRPO: +0.06 in 45 iterations, docs/rlvr.md). With clean answers on harder problems
    # (two-digit operands) it was greedy 0.32, sampled 0.28, and GRPO did not raise it in 60 iterations.
    # Measured near that budget on those problems: 2 layers beat 3 (0.40 vs 0.31 at 2000 steps), lr 3e-3 beat
    # 5e-3 (0.27 vs 0.18 at 1500 steps), and a loss on the answers alone learned more slowly (0.12 vs 0.22).
    "small": ArithmeticSize(LMSize(n_layer=2, n_embd=128, n_head=4, n_positions=128, steps=1800, batch=64, lr=3e-3,
                                   eval_blocks=500, packed=False), problems=60_000, accuracy_problems=500,
                            answer_noise=0.4),
}


def prepare_from_file(data: str | Path, out: str | Path, **kw: Any) -> dict:
    """:func:`prepare_models` on a ``.jsonl``/``.jsonl.gz`` file of ``{"text", "label"}`` records.
    Relative ``data`` and ``out`` are under the symrl root, where the offline presets look (``symrl.paths``)."""
    records = read_records(data, field="--data")
    return prepare_models(records, resolve_path(out), source=str(data), **kw)


def prepare_models(records: list[dict], out: str | Path, *, size: str = "small", seed: int = 0,
                   steps: int | None = None, force: bool = False, device: str = "auto",
                   threads: int | None = None, source: str = "records",
                   log: Callable[[str], None] = print) -> dict:
    """Build tokenizer, policy and classifier into ``out``; reuse a finished preparation with the same settings.

    ``steps`` overrides the policy's pretraining steps (the classifier keeps its preset). The folder
    appears only when complete (built beside it, then renamed), so a killed run never leaves a folder
    that looks finished. ``threads`` sets torch's CPU threads for this call only. Returns the contents
    of ``prepared.json`` plus ``paths`` (absolute folders) and ``reused``.
    """
    preset = _preset(size, SIZES)
    _check_steps(steps)
    text, labels = _validated(records)
    target = resolve_device(device)
    # A preparation is reused only if all of these match, the preset's numbers included.
    settings = {"format": FORMAT, "size": size, "seed": seed, "lm_steps": steps or preset.lm_steps,
                "preset": asdict(preset), "n_records": len(records), "data_sha256": _fingerprint(text, labels)}
    return _prepare(Path(out), settings, lambda folder: _build(text, labels, folder, preset, settings, source,
                                                               target, log),
                    ("policy", "classifier", "tokenizer"), force=force, threads=threads, log=log)


def prepare_arithmetic(out: str | Path, *, size: str = "small", seed: int = 0, steps: int | None = None,
                       force: bool = False, device: str = "auto", threads: int | None = None,
                       log: Callable[[str], None] = print) -> dict:
    """Build the arithmetic policy into ``out`` (relative: under the symrl root), as :func:`prepare_models`
    builds the review models (reuse, atomic folder, ``threads``). The result holds ``arithmetic``: the
    held-out accuracy, also in ``OUT/arithmetic.json``."""
    preset = _preset(size, ARITHMETIC_SIZES)
    _check_steps(steps)
    target = resolve_device(device)
    settings = {"format": FORMAT, "task": "arithmetic", "size": size, "seed": seed,
                "lm_steps": steps or preset.lm.steps, "preset": asdict(preset),
                "operations": {op: list(digits) for op, digits in arithmetic.OPERATIONS.items()}}
    return _prepare(resolve_path(out), settings,
                    lambda folder: _build_arithmetic(folder, preset, settings, target, log), ("policy",),
                    force=force, threads=threads, log=log)


def _prepare(out: Path, settings: dict, build: Callable[[Path], dict], folders: tuple[str, ...], *,
             force: bool, threads: int | None, log: Callable[[str], None]) -> dict:
    """Reuse a finished preparation in ``out`` made with the same ``settings``, else ``build`` one there."""
    finished = _finished(out)
    if finished is not None and finished.get("settings") == settings and not force:
        log(f"prepare: {out} already holds this preparation (size {settings['size']}, seed {settings['seed']}); "
            "reusing it")
        return _with_paths(finished, out, folders, reused=True)
    _check_replaceable(out)
    with _torch_threads(threads):
        info = _build_atomically(out, build)
    log(f"prepare: done in {info['seconds']['total']:.0f} s -> {out}")
    return _with_paths(info, out, folders, reused=False)


def _build_atomically(out: Path, build: Callable[[Path], dict]) -> dict:
    """Build in a hidden folder beside ``out`` and rename it only once ``prepared.json`` is written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = out.with_name(f".{out.name}.building-{os.getpid()}-{time.time_ns()}")
    folder.mkdir()
    try:
        info = build(folder)
        (folder / "prepared.json").write_text(json.dumps(info, indent=2) + "\n")
        _replace(folder, out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return info


def _build(text: list[str], labels: list[int], folder: Path, preset: ModelSize, settings: dict, source: str,
           device: torch.device, log: Callable[[str], None]) -> dict:
    """Train all three artefacts on one seeded train/validation split and save them into ``folder``."""
    start = time.perf_counter()
    seed = settings["seed"]
    train, val = _split(len(text), seed)
    log(f"prepare: {len(train)} training / {len(val)} held-out records, size {settings['size']}, on {device}")

    tokenizer = train_tokenizer([text[i] for i in train], preset.vocab_size, preset.n_positions)
    tokenizer_s = time.perf_counter() - start
    log(f"tokenizer: {len(tokenizer)} tokens in {tokenizer_s:.1f} s")

    policy, policy_info = _pretrain_policy(tokenizer, [text[i] for i in train], [text[i] for i in val],
                                           preset.lm, settings["lm_steps"], seed, device, log)
    policy_s = time.perf_counter() - start - tokenizer_s

    classifier_tokenizer = _classifier_tokenizer(tokenizer, preset)
    classifier, classifier_info = _train_classifier(
        classifier_tokenizer, policy, ([text[i] for i in train], [labels[i] for i in train]),
        ([text[i] for i in val], [labels[i] for i in val]), preset, seed, device, log)
    classifier_s = time.perf_counter() - start - tokenizer_s - policy_s

    _save(folder, tokenizer, policy, classifier, classifier_tokenizer)
    return {"settings": settings, "size": settings["size"], "seed": seed, "data": source,
            "n_train": len(train), "n_val": len(val), "vocab_size": len(tokenizer),
            "policy": policy_info, "classifier": classifier_info,
            "seconds": {"tokenizer": round(tokenizer_s, 1), "policy": round(policy_s, 1),
                        "classifier": round(classifier_s, 1), "total": round(time.perf_counter() - start, 1)},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}


def _save(folder: Path, tokenizer: PreTrainedTokenizerFast, policy: GPT2LMHeadModel,
          classifier: DistilBertForSequenceClassification, classifier_tokenizer: PreTrainedTokenizerFast) -> None:
    """``save_pretrained`` into the three folders."""
    with _quiet_saving():
        tokenizer.save_pretrained(folder / "tokenizer")
        policy.save_pretrained(folder / "policy")
        tokenizer.save_pretrained(folder / "policy")
        classifier.save_pretrained(folder / "classifier")
        classifier_tokenizer.save_pretrained(folder / "classifier")


@contextlib.contextmanager
def _quiet_saving() -> Iterator[None]:
    """Keeps transformers' per-file progress bars of ``save_pretrained`` out of the log."""
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _build_arithmetic(folder: Path, preset: ArithmeticSize, settings: dict, device: torch.device,
                      log: Callable[[str], None]) -> dict:
    """Pretrain on worked training problems, measure greedy accuracy on held-out ones, save into ``folder``."""
    start = time.perf_counter()
    seed = settings["seed"]
    train = arithmetic.worked_texts(arithmetic.problems(seed, preset.problems, "train"), preset.answer_noise, seed)
    held_out = arithmetic.held_out_problems(preset.accuracy_problems)
    log(f"prepare: {len(train)} worked training problems, {len(held_out)} held-out ones, "
        f"size {settings['size']}, on {device}")
    tokenizer = train_tokenizer(train, BYTE_VOCAB, preset.lm.n_positions)
    policy, policy_info = _pretrain_policy(tokenizer, train, [p.text for p in held_out], preset.lm,
                                           settings["lm_steps"], seed, device, log)
    policy_s = time.perf_counter() - start
    score = arithmetic_accuracy(policy, tokenizer, held_out, device)
    by_operation = ", ".join(f"{op} {share:.2f}" for op, share in score["by_operation"].items())
    log(f"arithmetic: held-out accuracy {score['accuracy']:.3f} on {score['problems']} problems "
        f"(greedy; {by_operation})")
    with _quiet_saving():
        policy.save_pretrained(folder / "policy")
        tokenizer.save_pretrained(folder / "policy")
    summary = {"task": "arithmetic", "size": settings["size"], "seed": seed, **score}
    (folder / "arithmetic.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"settings": settings, "task": "arithmetic", "size": settings["size"], "seed": seed,
            "n_train": len(train), "vocab_size": len(tokenizer), "policy": policy_info,
            "arithmetic": {k: v for k, v in score.items() if k != "samples"},
            "seconds": {"policy": round(policy_s, 1), "total": round(time.perf_counter() - start, 1)},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}


@torch.no_grad()
def arithmetic_accuracy(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast,
                        problems: list[arithmetic.Problem], device: torch.device, batch: int = 100) -> dict:
    """Share of ``problems`` whose greedy completion the task's checker accepts, overall and per
    operation, sampled as ``symrl rlhf`` samples (left-padded prompts, cut after EOS)."""
    model.to(device).eval()
    settings = GenerationConfig(prompt_tokens=model.config.n_positions - ANSWER_TOKENS,
                                max_new_tokens=ANSWER_TOKENS, min_new_tokens=0)
    completions: list[str] = []
    for start in range(0, len(problems), batch):
        prompts = [p.prompt for p in problems[start:start + batch]]
        sampled = generation.sample(model.generate, tokenizer, prompts, settings, device, greedy=True)
        completions += generation.decode(tokenizer, sampled.continuation, sampled.continuation_mask)
    model.cpu()
    correct = [arithmetic.is_correct(c, p.answer) for c, p in zip(completions, problems)]

    def share(flags: list[bool]) -> float:
        return round(sum(flags) / max(1, len(flags)), 4)

    return {"accuracy": share(correct), "problems": len(problems), "decoding": "greedy",
            "by_operation": {op: share([ok for ok, p in zip(correct, problems) if p.op == op])
                             for op in arithmetic.OPERATIONS},
            "samples": [{"prompt": p.prompt, "completion": c, "answer": p.answer, "correct": ok}
                        for p, c, ok in list(zip(problems, completions, correct))[:8]]}


def train_tokenizer(text: list[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE: every string encodes (no unknown tokens) and decodes back exactly.
    ``vocab_size`` = :data:`BYTE_VOCAB` learns no merges: one token per byte."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(text, trainer)
    # transformers 5's GPT2TokenizerFast(vocab_file=..., merges_file=...) builds an empty tokenizer;
    # wrapping the trained object keeps it whole.
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=PAD, padding_side="left", model_max_length=max_length,
                                   clean_up_tokenization_spaces=False)


def _classifier_tokenizer(tokenizer: PreTrainedTokenizerFast, preset: ModelSize) -> PreTrainedTokenizerFast:
    """The policy's vocabulary, with EOS prepended as DistilBERT's pooled first token and right padding."""
    bpe = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, tokenizer.eos_token_id)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=PAD, padding_side="right", model_max_length=preset.clf_max_len,
                                   truncation_side="right", clean_up_tokenization_spaces=False)


def _pretrain_policy(tokenizer: PreTrainedTokenizerFast, train: list[str], val: list[str], lm: LMSize,
                     steps: int, seed: int, device: torch.device,
                     log: Callable[[str], None]) -> tuple[GPT2LMHeadModel, dict]:
    """Causal-LM pretraining on documents (reviews, worked problems), packed into blocks of
    ``n_positions`` tokens or one a row (``lm.packed``)."""
    layout = _blocks if lm.packed else _rows
    train_blocks = layout(tokenizer, train, lm.n_positions)
    val_blocks = layout(tokenizer, val, lm.n_positions)[:lm.eval_blocks]
    if len(val_blocks) == 0:
        raise ConfigError(f"--data: the held-out {VAL_FRACTION:.0%} of the records holds fewer than "
                          f"{lm.n_positions} tokens; allowed: more or longer records")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=lm.n_positions, n_embd=lm.n_embd,
                        n_layer=lm.n_layer, n_head=lm.n_head, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                        # off: these budgets barely fit the data, and RL updates need it off anyway
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).to(device)
    pad = tokenizer.pad_token_id
    initial = _lm_loss(model, val_blocks, pad, device)
    generator = torch.Generator().manual_seed(seed)
    batches = (_lm_batch(b, pad) for b in _cycle(train_blocks, lm.batch, generator))
    log(f"policy: GPT-2 with {_params(model) / 1e6:.2f}M parameters, {len(train_blocks)} "
        f"{'blocks of' if lm.packed else 'rows of at most'} {train_blocks.shape[1]} tokens, {steps} steps of "
        f"{lm.batch}; held-out loss {initial:.3f}")
    _fit(model, batches, steps, lm.lr, device, log, "policy")
    final = _lm_loss(model, val_blocks, pad, device)
    log(f"policy: held-out loss {final:.3f}, perplexity {math.exp(final):.1f}")
    return model.cpu().eval(), {"params": _params(model), "steps": steps, "train_blocks": len(train_blocks),
                                "val_loss_init": round(initial, 4), "val_loss": round(final, 4),
                                "val_perplexity": round(math.exp(final), 2)}


def _train_classifier(tokenizer: PreTrainedTokenizerFast, policy: GPT2LMHeadModel,
                      train: tuple[list[str], list[int]], val: tuple[list[str], list[int]], preset: ModelSize,
                      seed: int, device: torch.device,
                      log: Callable[[str], None]) -> tuple[DistilBertForSequenceClassification, dict]:
    """DistilBERT on the 0/1 labels, its token embeddings started from the pretrained policy's."""
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=len(tokenizer), max_position_embeddings=preset.clf_max_len,
                              n_layers=preset.clf_layers, n_heads=preset.clf_heads, dim=preset.clf_dim,
                              hidden_dim=preset.clf_hidden, pad_token_id=tokenizer.pad_token_id,
                              # off: at these budgets it only slowed learning (measured on small)
                              dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0,
                              id2label=LABELS, label2id={name: i for i, name in LABELS.items()})
    model = DistilBertForSequenceClassification(config)
    transferred = _transfer_embeddings(policy, model)
    model.to(device)
    encoded = tokenizer(train[0], truncation=True)["input_ids"]
    generator = torch.Generator().manual_seed(seed)
    log(f"classifier: DistilBERT with {_params(model) / 1e6:.2f}M parameters, {len(encoded)} reviews "
        f"(at most {preset.clf_max_len} tokens), {preset.clf_steps} steps of {preset.clf_batch}"
        + (", token embeddings from the policy" if transferred else ""))
    _fit(model, _labelled_batches(encoded, train[1], preset.clf_batch, tokenizer.pad_token_id, generator),
         preset.clf_steps, preset.clf_lr, device, log, "classifier")
    held_out = tokenizer(val[0], truncation=True)["input_ids"]
    accuracy = _accuracy(model, held_out, val[1], tokenizer.pad_token_id, device)
    log(f"classifier: held-out accuracy {accuracy:.3f} on {len(val[1])} reviews")
    return model.cpu().eval(), {"params": _params(model), "steps": preset.clf_steps, "max_length": preset.clf_max_len,
                                "embeddings_from_policy": transferred, "val_accuracy": round(accuracy, 4)}


def _transfer_embeddings(policy: GPT2LMHeadModel, classifier: DistilBertForSequenceClassification) -> bool:
    """Copy the policy's token embeddings when the shapes match: pretrained words help a short classifier run."""
    source = policy.get_input_embeddings().weight
    target = classifier.get_input_embeddings().weight
    if source.shape != target.shape:
        return False
    with torch.no_grad():
        target.copy_(source.detach().cpu())
    return True


def _fit(model: torch.nn.Module, batches: Iterator[Batch], steps: int, lr: float, device: torch.device,
         log: Callable[[str], None], name: str) -> None:
    """AdamW with linear warmup and cosine decay; logs the mean loss about ten times."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 20), steps)
    every = max(1, steps // 10)
    model.train()
    total, count, started = 0.0, 0, time.perf_counter()
    for step in range(1, steps + 1):
        loss = model(**{k: v.to(device) for k, v in next(batches).items()}).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        total, count = total + loss.item(), count + 1
        if step % every == 0 or step == steps:
            log(f"{name}: step {step}/{steps} loss {total / count:.3f} ({time.perf_counter() - started:.0f} s)")
            total, count = 0.0, 0
    model.eval()


def _blocks(tokenizer: PreTrainedTokenizerFast, text: list[str], length: int) -> torch.Tensor:
    """Documents as one token stream, each preceded by EOS, cut into full rows of ``length`` tokens."""
    stream = []
    for encoding in tokenizer.backend_tokenizer.encode_batch(text):
        stream.append(tokenizer.eos_token_id)
        stream.extend(encoding.ids)
    rows = len(stream) // length
    return torch.tensor(stream[:rows * length], dtype=torch.long).view(rows, length)


def _rows(tokenizer: PreTrainedTokenizerFast, text: list[str], length: int) -> torch.Tensor:
    """One document a row, followed by EOS (so that the model learns to stop), at most ``length``
    tokens, right-padded to the longest."""
    encoded = [e.ids[:length - 1] + [tokenizer.eos_token_id] for e in tokenizer.backend_tokenizer.encode_batch(text)]
    return right_pad(encoded, tokenizer.pad_token_id, torch.device("cpu"))[0]


def _lm_batch(rows: torch.Tensor, pad_id: int) -> Batch:
    """Causal-LM inputs of token rows: padding is neither attended to nor predicted."""
    mask = (rows != pad_id).long()
    return {"input_ids": rows, "attention_mask": mask, "labels": rows.masked_fill(mask == 0, -100)}


def _cycle(rows: torch.Tensor, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled mini-batches of rows, reshuffled each epoch."""
    while True:
        for index in torch.randperm(len(rows), generator=generator).split(batch):
            yield rows[index]


def _labelled_batches(encoded: list[list[int]], labels: list[int], batch: int, pad_id: int,
                      generator: torch.Generator) -> Iterator[Batch]:
    """Endless shuffled, padded mini-batches for sequence classification."""
    while True:
        for index in torch.randperm(len(encoded), generator=generator).split(batch):
            chosen = index.tolist()
            padded = _padded([encoded[i] for i in chosen], pad_id)
            padded["labels"] = torch.tensor([labels[i] for i in chosen])
            yield padded


def _padded(sequences: list[list[int]], pad_id: int) -> Batch:
    """Right-padded ids and their attention mask."""
    ids, mask = right_pad(sequences, pad_id, torch.device("cpu"))
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def _lm_loss(model: GPT2LMHeadModel, rows: torch.Tensor, pad_id: int, device: torch.device, batch: int = 16) -> float:
    """Mean next-token cross-entropy over the tokens of held-out rows."""
    model.eval()
    total, count = 0.0, 0
    for part in rows.split(batch):
        inputs = {k: v.to(device) for k, v in _lm_batch(part, pad_id).items()}
        predicted = int((inputs["labels"][:, 1:] != -100).sum())
        total, count = total + model(**inputs).loss.item() * predicted, count + predicted
    return total / count


@torch.no_grad()
def _accuracy(model: DistilBertForSequenceClassification, encoded: list[list[int]], labels: list[int], pad_id: int,
              device: torch.device, batch: int = 64) -> float:
    """Held-out accuracy; reviews go by length so batches carry little padding."""
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    correct = 0
    for start in range(0, len(order), batch):
        chosen = order[start:start + batch]
        inputs = {k: v.to(device) for k, v in _padded([encoded[i] for i in chosen], pad_id).items()}
        predicted = model(**inputs).logits.argmax(-1).cpu()
        correct += int((predicted == torch.tensor([labels[i] for i in chosen])).sum())
    return correct / len(encoded)


def _preset(size: str, sizes: dict[str, Any]) -> Any:
    if size not in sizes:
        raise ConfigError(f"--size: got {size!r}, allowed: {', '.join(sizes)}")
    return sizes[size]


def _check_steps(steps: int | None) -> None:
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"--steps: got {steps!r}, allowed: a positive integer")


def _validated(records: list[dict]) -> tuple[list[str], list[int]]:
    """Texts and 0/1 labels, or an error saying what the records lack."""
    if len(records) < MIN_RECORDS:
        raise ConfigError(f"--data: got {len(records)} records, allowed: at least {MIN_RECORDS} "
                          "(a held-out tenth must remain for validation)")
    text = texts(records, "text", field="--data")
    bad = next((r for r in records if type(r.get("label")) is not int or r["label"] not in LABELS), None)
    if bad is not None:
        raise ConfigError(f"--data: a record has label {bad.get('label')!r}, allowed: 0 (negative) or 1 (positive)")
    labels = [r["label"] for r in records]
    if len(set(labels)) < 2:
        raise ConfigError(f"--data: every record has label {labels[0]}, allowed: both labels 0 and 1 "
                          "(the classifier needs both classes)")
    return text, labels


def _split(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/validation indices; the held-out tenth serves both the policy and the classifier."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(n * VAL_FRACTION))
    return order[n_val:], order[:n_val]


def _fingerprint(text: list[str], labels: list[int]) -> str:
    """A hash of the corpus, so a preparation is reused only for the same data (wherever the file lives)."""
    digest = hashlib.sha256()
    for t, label in zip(text, labels):
        digest.update(f"{label}\t{len(t)}\t".encode())
        digest.update(t.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _finished(out: Path) -> dict | None:
    """The contents of ``out/prepared.json``, or None when ``out`` holds no finished preparation."""
    try:
        return json.loads((out / "prepared.json").read_text())
    except (OSError, ValueError):
        return None


def _check_replaceable(out: Path) -> None:
    """Refuse to overwrite a folder that is neither empty nor an earlier preparation: it is someone's data."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "prepared.json").is_file())):
        raise ConfigError(f"--out: {str(out)!r} exists and is not a preparation; allowed: a new or empty "
                          "folder, or one written by `symrl lm prepare`")


def _replace(build: Path, out: Path) -> None:
    """Move the finished build to ``out``, setting an earlier preparation aside first and deleting it after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    build.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _with_paths(info: dict, out: Path, folders: tuple[str, ...], *, reused: bool) -> dict:
    folder = out.resolve()
    paths = {"out": folder, **{name: folder / name for name in folders}}
    return {**info, "paths": {k: str(v) for k, v in paths.items()}, "reused": reused}


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads for one call, restored after: the caller's process keeps its own setting."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
