"""``symrl lm prepare``'s builder: the saved folders load with plain transformers and the models learned."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2LMHeadModel,
)

from symrl.config import ConfigError
from symrl.llm.prepare import SIZES, prepare_from_file, prepare_models

REAL_CORPUS = Path(__file__).parents[1] / ".." / "shared" / "data" / "imdb_reviews_offline.jsonl.gz"
WORDS = {
    1: (["great", "wonderful", "brilliant", "moving", "superb", "delightful"], ["loved", "enjoyed", "adored"]),
    0: (["awful", "boring", "terrible", "dull", "dreadful", "clumsy"], ["hated", "disliked", "regretted"]),
}
SUBJECTS = ["movie", "film", "story", "cast", "script", "ending", "soundtrack", "director"]


def synthetic_reviews(n: int, seed: int) -> list[dict]:
    """Templated one-to-three-sentence reviews whose words give the label away."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        label = i % 2
        adjectives, verbs = WORDS[label]
        sentences = [f"The {rng.choice(SUBJECTS)} was {rng.choice(adjectives)}.",
                     f"I {rng.choice(verbs)} every minute of it.",
                     f"Honestly, the {rng.choice(SUBJECTS)} felt {rng.choice(adjectives)} too."]
        records.append({"text": " ".join(sentences[:rng.randint(1, 3)]), "label": label})
    return records


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[dict, Path, list[str]]:
    out = tmp_path_factory.mktemp("prep") / "models"
    lines: list[str] = []
    threads = torch.get_num_threads()
    result = prepare_models(synthetic_reviews(400, seed=0), out, size="tiny", seed=0, threads=1, log=lines.append)
    assert torch.get_num_threads() == threads, "the caller's thread setting must be restored"
    return result, out, lines


def test_tokenizer_round_trips_text_and_has_pad_and_eos(prepared):
    result, out, _ = prepared
    for folder in ("tokenizer", "policy"):
        tokenizer = AutoTokenizer.from_pretrained(out / folder)
        assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
        assert tokenizer.pad_token == "<|pad|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
        assert len(tokenizer) == result["vocab_size"] > 256
        for text in ["The film was great.", "  Two  spaces,\nnew lines\n\nand tabs\t!", "Zyxwv qq 42% <br />"]:
            ids = tokenizer(text)["input_ids"]
            assert tokenizer.decode(ids) == text
            assert tokenizer.eos_token_id not in ids, "the policy's prompts must not get an extra token"
    classifier_tokenizer = AutoTokenizer.from_pretrained(out / "classifier")
    ids = classifier_tokenizer("The film was great.")["input_ids"]
    assert ids[0] == classifier_tokenizer.eos_token_id, "DistilBERT classifies the first token's state"
    assert classifier_tokenizer.decode(ids, skip_special_tokens=True) == "The film was great."


def test_saved_folders_reload_with_auto_classes(prepared):
    result, out, _ = prepared
    assert json.loads((out / "prepared.json").read_text())["size"] == "tiny"
    assert result["paths"]["policy"] == str((out / "policy").resolve())
    policy = AutoModelForCausalLM.from_pretrained(out / "policy")
    tokenizer = AutoTokenizer.from_pretrained(out / "policy")
    assert policy.config.n_layer == SIZES["tiny"].n_layer
    prompt = tokenizer(["The movie", "I"], return_tensors="pt", padding=True)
    sampled = policy.generate(**prompt, do_sample=True, top_k=50, min_new_tokens=8, max_new_tokens=8)
    assert sampled.shape == (2, prompt["input_ids"].shape[1] + 8)
    classifier = AutoModelForSequenceClassification.from_pretrained(out / "classifier")
    assert classifier.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert classifier.config.label2id == {"NEGATIVE": 0, "POSITIVE": 1}


def test_pretraining_lowers_held_out_loss(prepared):
    result, out, _ = prepared
    assert result["policy"]["val_loss"] < result["policy"]["val_loss_init"] - 1.0
    tokenizer = AutoTokenizer.from_pretrained(out / "policy")
    trained = AutoModelForCausalLM.from_pretrained(out / "policy").eval()
    torch.manual_seed(1)
    untrained = GPT2LMHeadModel(trained.config).eval()
    text = " ".join(r["text"] for r in synthetic_reviews(40, seed=123))
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :SIZES["tiny"].n_positions]
    with torch.no_grad():
        assert trained(input_ids=ids, labels=ids).loss < untrained(input_ids=ids, labels=ids).loss - 1.0


def test_classifier_beats_chance_on_new_reviews(prepared):
    result, out, _ = prepared
    assert result["classifier"]["val_accuracy"] >= 0.8
    tokenizer = AutoTokenizer.from_pretrained(out / "classifier")
    classifier = AutoModelForSequenceClassification.from_pretrained(out / "classifier").eval()
    reviews = synthetic_reviews(100, seed=321)
    inputs = tokenizer([r["text"] for r in reviews], return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        predicted = classifier(**inputs).logits.argmax(-1)
    accuracy = (predicted == torch.tensor([r["label"] for r in reviews])).float().mean().item()
    assert accuracy >= 0.8


def test_logs_progress_sparsely(prepared):
    _, _, lines = prepared
    steps = [line for line in lines if " step " in line]
    assert 10 <= len(steps) <= 24 and any(line.startswith("policy: step") for line in steps)


def test_same_settings_reuse_the_preparation_and_new_ones_rebuild(prepared, tmp_path):
    records = synthetic_reviews(400, seed=0)
    out = tmp_path / "models"
    first = prepare_models(records, out, size="tiny", log=lambda line: None)
    stamp = (out / "prepared.json").stat().st_mtime_ns
    again = prepare_models(records, out, size="tiny", log=lambda line: None)
    assert again["reused"] and not first["reused"]
    assert (out / "prepared.json").stat().st_mtime_ns == stamp
    assert again["policy"] == first["policy"]
    rebuilt = prepare_models(records, out, size="tiny", seed=1, log=lambda line: None)
    assert not rebuilt["reused"] and rebuilt["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["models"], "no build or backup folder may be left behind"


def test_a_failed_build_leaves_no_folder(tmp_path):
    def crash_in_classifier(line: str) -> None:
        if line.startswith("classifier:"):
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        prepare_models(synthetic_reviews(200, seed=0), tmp_path / "models", size="tiny", log=crash_in_classifier)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("records, kwargs, words", [
    (synthetic_reviews(200, 0), {"size": "huge"}, ["--size", "'huge'", "tiny, small, medium"]),
    ([{"text": "fine"}] * 200, {}, ["--data", "label", "0 (negative) or 1 (positive)"]),
    ([{"text": "fine", "label": "pos"}] * 200, {}, ["--data", "'pos'", "0 (negative) or 1 (positive)"]),
    ([{"review": "fine", "label": 1}] * 200, {}, ["--data", "'text'"]),
    ([{"text": "fine", "label": 1}] * 200, {}, ["--data", "both labels 0 and 1"]),
    (synthetic_reviews(10, 0), {}, ["--data", "10 records", "at least"]),
    (synthetic_reviews(200, 0), {"steps": 0}, ["--steps", "positive integer"]),
])
def test_bad_input_names_the_field_and_what_is_allowed(tmp_path, records, kwargs, words):
    with pytest.raises(ConfigError) as error:
        prepare_models(records, tmp_path / "models", log=lambda line: None, **kwargs)
    for word in words:
        assert word in str(error.value)
    assert not (tmp_path / "models").exists()


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--out"):
        prepare_models(synthetic_reviews(200, 0), tmp_path / "models", size="tiny", log=lambda line: None)
    assert (tmp_path / "models" / "notes.txt").read_text() == "mine"


def test_prepare_from_file_on_the_real_corpus(tmp_path):
    if not REAL_CORPUS.is_file():
        pytest.skip(f"{REAL_CORPUS} is absent")
    head = tmp_path / "head.jsonl.gz"
    with gzip.open(REAL_CORPUS, "rt", encoding="utf-8") as source, gzip.open(head, "wt", encoding="utf-8") as target:
        for _, line in zip(range(300), source):
            target.write(line)
    result = prepare_from_file(head, tmp_path / "models", size="tiny", log=lambda line: None)
    assert result["data"] == str(head) and result["n_train"] + result["n_val"] == 300
    assert result["policy"]["val_loss"] < result["policy"]["val_loss_init"]
    assert 0.0 <= result["classifier"]["val_accuracy"] <= 1.0
    assert AutoTokenizer.from_pretrained(result["paths"]["policy"]).decode([]) == ""
