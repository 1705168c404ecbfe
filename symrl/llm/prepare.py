"""Offline stand-ins for ``gpt2`` and ``lvwerra/distilbert-imdb``, behind ``symrl lm prepare``.

Without internet there is no pretrained policy and no reward model. This trains both on a local
review corpus: a byte-level BPE tokenizer, a small GPT-2 pretrained as a causal LM (the policy) and
a small DistilBERT sentiment classifier (the reward: its POSITIVE logit, as in the paper). Each is
saved with ``save_pretrained``, so the RLHF code loads these folders exactly as it loads hub ids:

- ``OUT/policy``: GPT-2 and its tokenizer (left padding, for batched generation);
- ``OUT/classifier``: DistilBERT and its tokenizer (right padding, ``<|endoftext|>`` prepended as the
  first token, whose hidden state DistilBERT classifies, like BERT's ``[CLS]``);
- ``OUT/tokenizer``: the policy's tokenizer alone;
- ``OUT/prepared.json``: what was built and how well; written last, it marks a finished preparation.
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
Batch = dict[str, torch.Tensor]


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
    preset = _preset(size)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"--steps: got {steps!r}, allowed: a positive integer")
    text, labels = _validated(records)
    target = resolve_device(device)
    out = Path(out)
    # A preparation is reused only if all of these match, the preset's numbers included.
    settings = {"format": FORMAT, "size": size, "seed": seed, "lm_steps": steps or preset.lm_steps,
                "preset": asdict(preset), "n_records": len(records), "data_sha256": _fingerprint(text, labels)}
    finished = _finished(out)
    if finished is not None and finished.get("settings") == settings and not force:
        log(f"prepare: {out} already holds this preparation (size {size}, seed {seed}); reusing it")
        return _with_paths(finished, out, reused=True)
    _check_replaceable(out)
    with _torch_threads(threads):
        info = _build_atomically(
            out, lambda folder: _build(text, labels, folder, preset, settings, source, target, log))
    log(f"prepare: done in {info['seconds']['total']:.0f} s -> {out}")
    return _with_paths(info, out, reused=False)


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

    tokenizer = train_tokenizer([text[i] for i in train], preset)
    tokenizer_s = time.perf_counter() - start
    log(f"tokenizer: {len(tokenizer)} tokens in {tokenizer_s:.1f} s")

    policy, policy_info = _pretrain_policy(tokenizer, [text[i] for i in train], [text[i] for i in val],
                                           preset, settings["lm_steps"], seed, device, log)
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
    """``save_pretrained`` into the three folders, keeping transformers' per-file progress bars out of the log."""
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer.save_pretrained(folder / "tokenizer")
        policy.save_pretrained(folder / "policy")
        tokenizer.save_pretrained(folder / "policy")
        classifier.save_pretrained(folder / "classifier")
        classifier_tokenizer.save_pretrained(folder / "classifier")
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def train_tokenizer(text: list[str], preset: ModelSize) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE: every string encodes (no unknown tokens) and decodes back exactly."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=preset.vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(text, trainer)
    # transformers 5's GPT2TokenizerFast(vocab_file=..., merges_file=...) builds an empty tokenizer;
    # wrapping the trained object keeps it whole.
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=PAD, padding_side="left", model_max_length=preset.n_positions,
                                   clean_up_tokenization_spaces=False)


def _classifier_tokenizer(tokenizer: PreTrainedTokenizerFast, preset: ModelSize) -> PreTrainedTokenizerFast:
    """The policy's vocabulary, with EOS prepended as DistilBERT's pooled first token and right padding."""
    bpe = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, tokenizer.eos_token_id)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=PAD, padding_side="right", model_max_length=preset.clf_max_len,
                                   truncation_side="right", clean_up_tokenization_spaces=False)


def _pretrain_policy(tokenizer: PreTrainedTokenizerFast, train: list[str], val: list[str], preset: ModelSize,
                     steps: int, seed: int, device: torch.device,
                     log: Callable[[str], None]) -> tuple[GPT2LMHeadModel, dict]:
    """Causal-LM pretraining on reviews joined by EOS, cut into blocks of ``n_positions`` tokens."""
    train_blocks = _blocks(tokenizer, train, preset.n_positions)
    val_blocks = _blocks(tokenizer, val, preset.n_positions)[:preset.lm_eval_blocks]
    if len(val_blocks) == 0:
        raise ConfigError(f"--data: the held-out {VAL_FRACTION:.0%} of the records holds fewer than "
                          f"{preset.n_positions} tokens; allowed: more or longer records")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=preset.n_positions, n_embd=preset.n_embd,
                        n_layer=preset.n_layer, n_head=preset.n_head, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                        # off: these budgets barely fit the data, and RL updates need it off anyway
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).to(device)
    initial = _lm_loss(model, val_blocks, device)
    generator = torch.Generator().manual_seed(seed)
    batches = ({"input_ids": b, "labels": b} for b in _cycle(train_blocks, preset.lm_batch, generator))
    log(f"policy: GPT-2 with {_params(model) / 1e6:.2f}M parameters, {len(train_blocks)} blocks of "
        f"{preset.n_positions} tokens, {steps} steps of {preset.lm_batch}; held-out loss {initial:.3f}")
    _fit(model, batches, steps, preset.lm_lr, device, log, "policy")
    final = _lm_loss(model, val_blocks, device)
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
def _lm_loss(model: GPT2LMHeadModel, blocks: torch.Tensor, device: torch.device, batch: int = 16) -> float:
    """Mean next-token cross-entropy over held-out blocks."""
    model.eval()
    losses = [model(input_ids=b.to(device), labels=b.to(device)).loss.item() * len(b) for b in blocks.split(batch)]
    return sum(losses) / len(blocks)


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


def _preset(size: str) -> ModelSize:
    if size not in SIZES:
        raise ConfigError(f"--size: got {size!r}, allowed: {', '.join(SIZES)}")
    return SIZES[size]


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


def _with_paths(info: dict, out: Path, *, reused: bool) -> dict:
    folder = out.resolve()
    paths = {"out": folder, "policy": folder / "policy", "classifier": folder / "classifier",
             "tokenizer": folder / "tokenizer"}
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
