"""The IMDB task as TRIL builds it (Symmetric_tril src/tril/tasks/tasks.py:192-229,
buffers/prompt_buffer.py:37-65): prompts, NLL targets and the 80/20 split, against hand-written
expectations with a word-level tokenizer (one token per space-separated word, so the tokens can
be written down by hand)."""

import json

import numpy as np
import pytest
import torch

from symrl.config import ConfigError
from symrl.llm.config import build_rlhf_config
from symrl.llm.generation import Batch, encode_prompts
from symrl.llm.tasks import imdb_prompt, imdb_split, load_examples
from symrl.llm.trainer import RLHFTrainer
from symrl.run import RunDirectory

# review → (prompt: its first int(0.5·words) words of review.split(" "), the prompt's last 4 tokens,
# the NLL target: the review's first 5 tokens)
REVIEWS = {
    # 19 words (the double space gives an empty one) → 9: the prompt ends in that empty word's space
    "I loved this movie.<br /><br />The acting was  superb and the plot kept me guessing until the end.": (
        "I loved this movie.<br /><br />The acting was ", ["/><br", "/>The", "acting", "was"],
        ["I", "loved", "this", "movie.<br", "/><br"]),
    # 5 words → 2 (an odd count keeps the shorter half); a prompt shorter than 4 tokens is left-padded
    "Worst. Movie. Ever. Truly awful.": (
        "Worst. Movie.", ["Worst.", "Movie."], ["Worst.", "Movie.", "Ever.", "Truly", "awful."]),
    # 12 words → 6; the policy reads the last 4 tokens of the prompt, the target starts at the review's start
    "A quiet film about grief, memory and the sea that rewards patience.": (
        "A quiet film about grief, memory", ["film", "about", "grief,", "memory"],
        ["A", "quiet", "film", "about", "grief,"]),
}


def _word_tokenizer_and_policy(folder) -> str:
    """A WordLevel tokenizer over the reviews' words and a tiny GPT-2 of its vocabulary, saved as a
    policy folder that ``symrl rlhf`` loads like any other."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = sorted({w for review in REVIEWS for w in review.split()})
    vocab = {token: i for i, token in enumerate(["[PAD]", "[EOS]", "[UNK]", *words])}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", eos_token="[EOS]",
                                        unk_token="[UNK]")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_embd=8, n_layer=1, n_head=2, n_positions=32,
                               bos_token_id=1, eos_token_id=1)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _jsonl(path, texts) -> str:
    path.write_text("".join(json.dumps({"text": t, "label": 1}) + "\n" for t in texts))
    return str(path)


def test_prompts_and_nll_targets_follow_tril_by_hand(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for review, (prompt, _, _) in REVIEWS.items():
        assert imdb_prompt(review) == prompt
    cfg = build_rlhf_config(None, {
        "task": "imdb", "data": _jsonl(tmp_path / "reviews.jsonl", REVIEWS),
        "policy.model": _word_tokenizer_and_policy(tmp_path / "policy"), "reward.kind": "lexicon",
        "generation.prompt_tokens": 4, "generation.max_new_tokens": 5, "generation.min_new_tokens": 5,
        "rollouts": 2, "minibatch_size": 2, "eval_prompts": 0, "device": "cpu", "out": str(tmp_path / "runs")})
    run = RunDirectory(cfg)
    run.prepare(force=False)
    trainer = RLHFTrainer(cfg, run)
    examples = trainer.train_examples + trainer.eval_examples
    assert (len(trainer.train_examples), len(trainer.eval_examples)) == (2, 1)  # int(0.8·3) = 2
    # the reference is the whole raw review (<br /> kept), the prompt the first half of its words
    assert {e.reference: e.prompt for e in examples} == {review: prompt for review, (prompt, _, _) in REVIEWS.items()}
    tokenizer = trainer.agent.tokenizer
    query, query_mask = encode_prompts(tokenizer, [e.prompt for e in examples], 4, torch.device("cpu"))
    batch = Batch(query, query_mask, torch.zeros((3, 5), dtype=torch.long), torch.ones((3, 5), dtype=torch.long))
    targets = trainer.agent.references(examples, batch)
    for row, example in enumerate(examples):
        _, last_tokens, first_tokens = REVIEWS[example.reference]
        read = tokenizer.convert_ids_to_tokens(query[row][query_mask[row].bool()].tolist())
        assert read == last_tokens
        assert query_mask[row].tolist() == [0] * (4 - len(last_tokens)) + [1] * len(last_tokens)  # left padding
        target = targets.continuation[row][targets.continuation_mask[row].bool()].tolist()
        assert tokenizer.convert_ids_to_tokens(target) == first_tokens


def _split_cfg(data: str, **overrides):
    return build_rlhf_config(None, {"task": "imdb", "data": data, "rollouts": 4, "minibatch_size": 4,
                                    "eval_prompts": 0, **overrides})


def test_split_is_80_20_of_the_reviews_shuffled_by_the_run_seed(tmp_path):
    """TRIL: ``dataset["train"].shuffle(seed=run seed)`` (numpy ``default_rng(seed).permutation``),
    the first 80% for training and the rest for validation."""
    reviews = [f"review number {i} says the film was fine" for i in range(50)]
    data = _jsonl(tmp_path / "reviews.jsonl", reviews)
    held_out = {}
    for seed in (42, 43):
        train, validation = load_examples(_split_cfg(data, seed=seed), None)
        order = np.random.default_rng(seed).permutation(50)
        assert [e.reference for e in train] == [reviews[i] for i in order[:40]]
        assert [e.reference for e in validation] == [reviews[i] for i in order[40:]]
        held_out[seed] = [e.reference for e in validation]
    assert held_out[42] != held_out[43]
    assert [e.reference for e in load_examples(_split_cfg(data, seed=42, eval_prompts=4), None)[1]] == held_out[42][:4]
    assert imdb_split(10, 7) == (np.random.default_rng(7).permutation(10)[:8].tolist(),
                                 np.random.default_rng(7).permutation(10)[8:].tolist())


def test_a_review_without_a_prompt_is_left_out_and_small_data_names_the_field(tmp_path):
    reviews = [f"review {i} was fine" for i in range(9)] + ["Meh."]  # one word: an empty first half
    train, validation = load_examples(_split_cfg(_jsonl(tmp_path / "a.jsonl", reviews)), None)
    assert len(train) + len(validation) == 9 and all(e.prompt for e in train + validation)
    with pytest.raises(ConfigError, match=r"data: 10 reviews give .* fewer than rollouts \(16\)"):
        load_examples(_split_cfg(_jsonl(tmp_path / "a.jsonl", reviews), rollouts=16, minibatch_size=4), None)
    with pytest.raises(ConfigError, match="eval_prompts: got 0, allowed: an integer >= 1, or 0 .* with task=imdb"):
        build_rlhf_config(None, {"task": "custom", "data": str(tmp_path / "a.jsonl"), "eval_prompts": 0})


def test_imdb_presets_set_trils_values(tmp_path):
    """The paper presets carry TRIL's IMDB construction (each preset's source names the lines); the
    offline ones the same construction at small scale."""
    data = _jsonl(tmp_path / "reviews.jsonl", REVIEWS)
    for name in ("imdb-ppo", "imdb-sppo", "imdb-scaled_ppo", "imdb-offline-ppo", "imdb-offline-sppo"):
        cfg = build_rlhf_config(name, {"data": data} if "offline" in name else {})
        assert (cfg.policy.value_head, cfg.reward.kind, cfg.reward.score, cfg.loss.value_loss_scale, cfg.adam_eps,
                cfg.weight_decay, cfg.eval_reward_prompt, cfg.eval_lms_mode) == (
            "separate", "classifier", "probability", 0.5, 1e-5, 1e-6, "full", "joined"), name
    paper = build_rlhf_config("imdb-sppo")
    assert (paper.eval_every, paper.eval_prompts, paper.eval_lms, paper.eval_ppl_stride, paper.loss.vf_coef,
            paper.generation.prompt_tokens, paper.generation.max_new_tokens) == (
        10, 0, ["lvwerra/gpt2-imdb"], 512, 0.5, 64, 48)
