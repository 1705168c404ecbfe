"""Relative paths of models and data resolve against the symrl root, from any current directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from symrl.cli import main
from symrl.config import ConfigError
from symrl.llm import hub
from symrl.llm.config import build_rlhf_config
from symrl.paths import project_root

ROOT = Path(__file__).resolve().parents[1]


class _Loader:
    """Stands in for ``AutoModel``: records what ``from_pretrained`` was asked to load."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, name, **kwargs):
        cls.calls.append((name, kwargs))
        return name


def test_the_root_is_the_checkout_unless_symrl_home_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("SYMRL_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_root() == ROOT
    monkeypatch.setenv("SYMRL_HOME", str(tmp_path / "home"))
    assert project_root() == tmp_path / "home"


def test_preset_paths_are_read_from_the_root_not_the_current_directory(tmp_path, monkeypatch):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (home / "models" / "policy").mkdir(parents=True)
    (home / "corpus.jsonl").write_text(json.dumps({"prompt": "a review"}) + "\n")
    elsewhere.mkdir()
    monkeypatch.setenv("SYMRL_HOME", str(home))
    monkeypatch.chdir(elsewhere)
    cfg = build_rlhf_config(None, {"task": "custom", "data": "corpus.jsonl", "policy.model": "models/policy"})
    assert cfg.data == "corpus.jsonl"  # the config keeps what was written: run dirs stay portable
    _Loader.calls = []
    assert hub.from_pretrained(_Loader, "models/policy", field="policy.model") == str(home / "models" / "policy")
    # a hub id goes to the hub loading code as it is
    assert hub.from_pretrained(_Loader, "lvwerra/distilbert-imdb", field="reward.model") == "lvwerra/distilbert-imdb"
    assert _Loader.calls[-1] == ("lvwerra/distilbert-imdb", {"local_files_only": True})


def test_missing_preset_paths_fail_in_one_line_naming_the_field_the_path_and_the_fix(tmp_path, monkeypatch, capsys):
    home = tmp_path / "empty-home"
    home.mkdir()
    monkeypatch.setenv("SYMRL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=rf"data: .* \(looked for {home}/\.\./shared/data/"):
        build_rlhf_config("imdb-offline-sppo")
    with pytest.raises(ConfigError) as missing:
        hub.from_pretrained(_Loader, "models/imdb-offline/classifier", field="reward.model")
    message = str(missing.value)
    assert message.startswith("reward.model: 'models/imdb-offline/classifier' does not exist")
    assert f"looked for {home}/models/imdb-offline/classifier" in message and "symrl lm prepare" in message
    corpus = home / "reviews.jsonl"
    corpus.write_text(json.dumps({"text": "good", "label": 1}) + "\n")
    assert main(["rlhf", "--preset", "imdb-offline-sppo", f"out={tmp_path / 'runs'}", "data=reviews.jsonl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("symrl: error: policy.") and "make demo-rlhf" in err, err
    assert f"looked for {home}/models/imdb-offline/policy" in err and "SYMRL_HOME" in err
