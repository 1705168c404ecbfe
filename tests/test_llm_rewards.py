"""Sequence rewards and text metrics against hand computations on tiny models built offline here."""

from __future__ import annotations

import math
import time

import pytest
import torch

from symrl.config import ConfigError
from symrl.llm import metrics
from symrl.llm.rewards import (
    CallableReward,
    ClassifierReward,
    LexiconReward,
    RewardModelReward,
    build_reward,
)

EOS = "<|endoftext|>"
CORPUS = [
    "this movie was great and wonderful, I loved every minute",
    "a terrible boring film with awful acting",
    "the summary of the post is short and clear",
    "my landlord wants me to pay for the broken window",
    "tl;dr: the plot was thin but the music was lovely",
]


def _tokenizer(with_pad: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[EOS, "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS * 4, trainer)
    special = {"eos_token": EOS, "bos_token": EOS}
    if with_pad:
        special["pad_token"] = "<pad>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **special)
    assert len(tokenizer("a great film")["input_ids"]) > 0  # an empty vocabulary would encode nothing
    return tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Folders holding a tiny classifier, reward model and causal LM, each with its tokenizer."""
    from transformers import (
        DistilBertConfig, DistilBertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification,
        GPT2LMHeadModel,
    )

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_models")
    padded, unpadded = _tokenizer(with_pad=True), _tokenizer(with_pad=False)
    eos_id = unpadded.eos_token_id
    vocab = len(padded)
    gpt2 = dict(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, initializer_range=0.3,
                bos_token_id=eos_id, eos_token_id=eos_id)
    models = {
        # max 24 positions so that truncation is exercised by ordinary sentences
        "classifier": (DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=vocab, dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=24,
            pad_token_id=padded.pad_token_id, initializer_range=0.3,
            id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})), padded),
        # a tokenizer without pad token, as GPT-2's: the reward falls back to EOS
        "reward_model": (GPT2ForSequenceClassification(GPT2Config(num_labels=1, pad_token_id=eos_id, n_positions=64,
                                                                   **gpt2)),
                         unpadded),
        "lm": (GPT2LMHeadModel(GPT2Config(n_positions=24, **gpt2)), unpadded),
    }
    paths = {}
    for name, (model, tokenizer) in models.items():
        model.eval().save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = str(root / name)
    paths["tokenizer"] = unpadded
    return paths


def _load(kind: str, path: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    loader = AutoModelForCausalLM if kind == "lm" else AutoModelForSequenceClassification
    return loader.from_pretrained(path).eval()


# ---------------------------------------------------------------- classifier


def test_classifier_reward_is_the_positive_probability_of_prompt_plus_completion(tiny):
    """TRIL's IMDB reward: softmax(logits)[label] of prompt + completion; ``score=logit`` the logit."""
    prompts = ["this movie was", "a terrible", "the plot"]
    completions = [" great and wonderful", " boring film with awful acting and more", ""]
    probability = ClassifierReward(tiny["classifier"], batch_size=2)(prompts, completions, None)
    logit = ClassifierReward(tiny["classifier"], score="logit", batch_size=2)(prompts, completions, None)

    model, tokenizer = _load("classifier", tiny["classifier"]), tiny["tokenizer"]
    with torch.no_grad():
        logits = torch.stack([model(input_ids=torch.tensor([tokenizer(p + c)["input_ids"]])).logits[0]
                              for p, c in zip(prompts, completions)])
    assert probability.dtype == torch.float32 and probability.shape == (3,)
    torch.testing.assert_close(probability, torch.softmax(logits, dim=-1)[:, 1], rtol=0, atol=1e-6)
    torch.testing.assert_close(logit, logits[:, 1], rtol=1e-5, atol=1e-5)
    assert (logits[:, 1] - logits[:, 0]).abs().max() > 1e-2  # the probability is not a constant 0.5


def test_classifier_label_by_name_any_case_or_index(tiny):
    texts = (["a terrible", "this movie"], [" film", " was great"])
    negative = ClassifierReward(tiny["classifier"], label="negative")(*texts)
    by_index = ClassifierReward(tiny["classifier"], label=0)(*texts)
    positive = ClassifierReward(tiny["classifier"], label="1")(*texts)
    torch.testing.assert_close(negative, by_index)
    assert not torch.allclose(negative, positive)


def test_classifier_unknown_label_lists_the_models_labels(tiny):
    with pytest.raises(ConfigError, match=r"reward\.label: got 'joy'.*0=NEGATIVE, 1=POSITIVE"):
        ClassifierReward(tiny["classifier"], label="joy")
    with pytest.raises(ConfigError, match="reward.label"):
        ClassifierReward(tiny["classifier"], label=2)


def test_classifier_truncates_to_the_models_positions_keeping_the_end(tiny):
    """A long prompt + completion keeps its last tokens (the completion's), as TRIL's tokenizer does."""
    long_text = " ".join(CORPUS)
    tokenizer = tiny["tokenizer"]
    assert len(tokenizer(long_text)["input_ids"]) > 24
    score = ClassifierReward(tiny["classifier"], score="logit")([long_text], [""], None)
    model = _load("classifier", tiny["classifier"])
    with torch.no_grad():
        end, start = (model(input_ids=torch.tensor([ids])).logits[0, 1]
                      for ids in (tokenizer(long_text)["input_ids"][-24:], tokenizer(long_text)["input_ids"][:24]))
    torch.testing.assert_close(score[0], end, rtol=1e-5, atol=1e-5)
    assert (end - start).abs() > 1e-3


# ---------------------------------------------------------------- reward model


def _rm_by_hand(model, tokenizer, text: str) -> torch.Tensor:
    """The score head at the last token of one unpadded text, bypassing transformers' pad detection."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model.score(model.transformer(input_ids=ids).last_hidden_state)[0, -1, 0]


def test_reward_model_reads_the_last_real_token_whatever_the_padding(tiny):
    prompts = ["POST: my landlord wants me to pay\nTL;DR:", "POST: short\nTL;DR:", "POST: music\nTL;DR:"]
    # the last one ends in EOS, which is also the pad token: it must still be read, not skipped
    completions = [" pay for the window", " the plot was thin but the music was lovely", " lovely" + EOS]
    model, tokenizer = _load("reward_model", tiny["reward_model"]), tiny["tokenizer"]
    expected = torch.stack([_rm_by_hand(model, tokenizer, p + c) for p, c in zip(prompts, completions)])

    batched = RewardModelReward(tiny["reward_model"], batch_size=3)(prompts, completions, None)
    alone = RewardModelReward(tiny["reward_model"], batch_size=1)(prompts, completions, None)
    assert batched.shape == (3,) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, expected, rtol=1e-5, atol=1e-5)
    assert expected.std() > 1e-3  # the texts really score differently, so the check has teeth


def test_relative_reward_subtracts_the_reference_score(tiny):
    prompts = ["POST: my landlord\nTL;DR:", "POST: a film\nTL;DR:"]
    samples = [" pay for the window", " boring"]
    references = [" landlord wants money", " the plot was thin but the music was lovely"]
    model, tokenizer = _load("reward_model", tiny["reward_model"]), tiny["tokenizer"]
    expected = torch.stack([_rm_by_hand(model, tokenizer, p + s) - _rm_by_hand(model, tokenizer, p + r)
                            for p, s, r in zip(prompts, samples, references)])
    relative = RewardModelReward(tiny["reward_model"], relative_to_reference=True)(prompts, samples, references)
    torch.testing.assert_close(relative, expected, rtol=1e-5, atol=1e-5)


def test_relative_reward_needs_references(tiny):
    reward = RewardModelReward(tiny["reward_model"], relative_to_reference=True)
    for references in (None, [" a reference", None]):
        with pytest.raises(ConfigError, match="reward.relative_to_reference"):
            reward(["a", "b"], [" c", " d"], references)


def test_reward_model_must_have_one_output(tiny):
    with pytest.raises(ConfigError, match=r"reward\.model: .* has 2 outputs"):
        RewardModelReward(tiny["classifier"])


# ---------------------------------------------------------------- lexicon and callable


def test_lexicon_reward_scores_the_completion_sentiment():
    scores = LexiconReward()(["I hated it. ", "I hated it. "], ["great wonderful movie", "terrible awful boring"], None)
    assert scores.dtype == torch.float32 and scores.shape == (2,)
    assert scores[0] > 0.5 and scores[1] < -0.5
    assert scores.tolist() == pytest.approx(metrics.vader_judge(["great wonderful movie", "terrible awful boring"]))


def test_callable_reward_imports_a_user_function():
    reward = CallableReward("tests.llm_reward_fns:completion_length")
    scores = reward(["p", "q"], ["one two three", "four"], None)
    assert scores.dtype == torch.float32 and scores.tolist() == [3.0, 1.0]


@pytest.mark.parametrize("spec, message", [
    ("tests.no_such_module:f", "cannot import module 'tests.no_such_module'"),
    ("tests.llm_reward_fns:missing", "has no function 'missing'"),
    ("tests.llm_reward_fns:NOT_A_FUNCTION", "has no function 'NOT_A_FUNCTION'"),
    ("tests.llm_reward_fns", "allowed: 'package.module:function'"),
])
def test_callable_reward_import_errors(spec, message):
    with pytest.raises(ConfigError, match=r"reward\.function: .*" + message.replace("(", r"\(")):
        CallableReward(spec)


@pytest.mark.parametrize("function, message", [
    ("one_score_only", r"shape \(1,\) for 2 completions"),
    ("not_numbers", "returned list"),
])
def test_callable_reward_result_errors(function, message):
    reward = CallableReward(f"tests.llm_reward_fns:{function}")
    with pytest.raises(ConfigError, match=message):
        reward(["p", "q"], ["a", "b"], None)


def test_build_reward_by_kind_and_its_errors(tiny):
    assert isinstance(build_reward("lexicon"), LexiconReward)
    assert isinstance(build_reward("classifier", model=tiny["classifier"], label="POSITIVE"), ClassifierReward)
    with pytest.raises(ConfigError, match="reward.kind: got 'sentiment', allowed: classifier, reward_model, "
                                          "lexicon, callable"):
        build_reward("sentiment")
    with pytest.raises(ConfigError, match=r"reward\.label: not an option of reward.kind=lexicon"):
        build_reward("lexicon", label="POSITIVE")
    with pytest.raises(ConfigError, match=r"reward\.function: required by reward\.kind=callable"):
        build_reward("callable")
    with pytest.raises(ConfigError, match="reward.score: got 'softmax', allowed: probability, logit"):
        build_reward("classifier", model=tiny["classifier"], score="softmax")


def test_hub_id_offline_fails_fast_naming_the_field(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"reward\.model: 'lvwerra/distilbert-imdb'"):
        ClassifierReward("lvwerra/distilbert-imdb")
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------- metrics


def test_distinct_n_pools_ngrams_over_all_texts():
    texts = ["the cat sat", "the cat ran", ""]
    assert metrics.distinct_n(texts, 1) == pytest.approx(4 / 6)  # the, cat, sat, ran of 6 words
    assert metrics.distinct_n(texts, 2) == pytest.approx(3 / 4)  # (the cat) repeats
    assert metrics.distinct_n(texts, 4) == 0.0
    assert metrics.distinct_n([], 1) == 0.0


def test_rouge_is_one_on_identical_and_zero_on_disjoint_text():
    same = metrics.rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    disjoint = metrics.rouge(["dogs bark loudly"], ["the cat sat"])
    assert disjoint == pytest.approx({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0})
    mean = metrics.rouge(["the cat sat", "dogs bark"], ["the cat sat", "cats purr"])
    assert mean["rouge1"] == pytest.approx(0.5)
    assert metrics.rouge(["cats running"], ["cat runs"])["rouge1"] == 1.0  # stemming


def test_win_rate_counts_ties_half():
    assert metrics.win_rate([3.0, 1.0, 2.0, 0.0], [1.0, 2.0, 2.0, 0.0]) == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert metrics.win_rate(torch.tensor([1.0]), torch.tensor([0.0])) == 1.0
    with pytest.raises(ValueError, match="pair up"):
        metrics.win_rate([1.0, 2.0], [1.0])


def _perplexity_by_hand(model, tokenizer, prompts, completions, max_positions=None) -> float:
    nll, count = 0.0, 0
    for prompt, completion in zip(prompts, completions):
        context = tokenizer(prompt)["input_ids"] or [tokenizer.eos_token_id]
        target = tokenizer(completion)["input_ids"]
        ids = (context + target)[-max_positions:] if max_positions else context + target
        n = min(len(target), len(ids) - 1)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
        for position in range(len(ids) - n, len(ids)):
            nll -= float(logp[position - 1, ids[position]])
        count += n
    return math.exp(nll / count)


def test_perplexity_is_exp_mean_nll_of_completion_tokens_and_padding_invariant(tiny):
    model, tokenizer = _load("lm", tiny["lm"]), tiny["tokenizer"]
    prompts = ["this movie was", "", "my landlord wants me to pay for", "a"]
    completions = [" great and wonderful", "a terrible boring film", " the window", " short"]
    expected = _perplexity_by_hand(model, tokenizer, prompts, completions)
    one = metrics.perplexity(model, tokenizer, prompts, completions, batch_size=1)
    padded = metrics.perplexity(model, tokenizer, prompts, completions, batch_size=3)
    assert one == pytest.approx(expected, rel=1e-4)
    assert padded == pytest.approx(expected, rel=1e-4)
    assert not model.training


def test_sliding_windows_score_every_token_once_by_hand():
    # n=10 tokens, window 6, stride 3: targets [1,3) [3,6) [6,9) [9,10), context back to i + 3 - 6
    assert metrics.sliding_windows(10, 6, 3) == [(0, 3, 2), (0, 6, 3), (3, 9, 3), (6, 10, 1)]
    assert metrics.sliding_windows(5, 4, 9) == [(0, 3, 2), (2, 5, 2)]  # stride cut to window - 1: one token of context
    assert metrics.sliding_windows(1, 4, 2) == [(0, 1, 0)]


def test_joined_perplexity_scores_the_joined_stream_in_windows(tiny):
    """TRIL's causal_(output_)perplexity: the texts joined by a blank line, one token stream, each
    token scored once with the context its window gives it; the same whatever the batching."""
    model, tokenizer = _load("lm", tiny["lm"]), tiny["tokenizer"]
    texts = ["this movie was great and wonderful", "a terrible boring film", "tl;dr: the plot was thin"]
    ids = tokenizer("\n\n".join(texts))["input_ids"]
    assert len(ids) > 24  # longer than the model's positions: several windows
    nll, count = 0.0, 0
    with torch.no_grad():
        for begin, end, n in metrics.sliding_windows(len(ids), 24, 8):
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids[begin:end]])).logits[0].double(), dim=-1)
            nll -= sum(float(logp[t - begin - 1, ids[t]]) for t in range(end - n, end))
            count += n
    assert count == len(ids) - 1
    expected = math.exp(nll / count)
    for batch_size in (1, 3):
        assert metrics.joined_perplexity(metrics.lm_logprobs(model), tokenizer, texts, 24, 8,
                                         batch_size=batch_size) == pytest.approx(expected, rel=1e-5)
    # within one window (no cut context) it is the stream's plain perplexity; separated texts differ
    short = ["a great film", "the plot was thin"]
    ids = tokenizer("\n\n".join(short))["input_ids"]
    assert len(ids) <= 24
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    plain = math.exp(-sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids))) / (len(ids) - 1))
    lm = metrics.lm_logprobs(model)
    assert metrics.joined_perplexity(lm, tokenizer, short, 24, 512) == pytest.approx(plain, rel=1e-5)
    assert metrics.joined_perplexity(lm, tokenizer, short, 24, 512, separator=" ") != pytest.approx(plain, rel=1e-3)


def test_perplexity_keeps_the_last_tokens_of_long_texts(tiny):
    model, tokenizer = _load("lm", tiny["lm"]), tiny["tokenizer"]
    prompts, completions = [" ".join(CORPUS[:3]), "the plot"], [" ".join(CORPUS[3:]), " was thin"]
    assert len(tokenizer(prompts[0] + completions[0])["input_ids"]) > 24
    expected = _perplexity_by_hand(model, tokenizer, prompts, completions, max_positions=24)
    assert metrics.perplexity(model, tokenizer, prompts, completions, batch_size=2) == pytest.approx(expected, rel=1e-4)
