"""Fixtures shared by the test modules."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from symrl.algos.onpolicy import OnPolicyTrainer, train
from symrl.config import TrainConfig

from symrl.llm.prepare import prepare_models
from tests.helpers import corpus


# The slowest test files, longest first (`pytest --durations`): `make test`'s workers take a file at a time,
# so these start at once instead of ending the run alone.
SLOWEST_FIRST = ("test_llm_rlvr.py", "test_llm_distributed.py", "test_llm_trainer.py", "test_train.py",
                 "test_sweep.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise


@pytest.fixture(scope="session")
def hub_offline():
    """Nothing is downloaded: every model the tests load is built here."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield mp
    mp.undo()


@pytest.fixture(scope="session")
def lm_setup(tmp_path_factory, hub_offline):
    """The tiny tokenizer, policy and sentiment classifier, prepared once on a synthetic corpus."""
    root = tmp_path_factory.mktemp("lm")
    records = corpus()
    (root / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    torch.manual_seed(0)
    prepare_models(records, root / "models", size="tiny", seed=0, log=lambda *a: None, device="cpu")
    return root


class Killed(Exception):
    """What ``train_until_killed`` raises in place of a SIGKILL."""


@pytest.fixture
def train_until_killed(monkeypatch) -> Callable[[TrainConfig, int], None]:
    """``symrl train``, killed after ``updates`` updates of this process (while the next rollout's
    update would start): what survives is what its last checkpoint holds, as after a SIGKILL."""
    def run(cfg: TrainConfig, updates: int) -> None:
        done = 0
        learn = OnPolicyTrainer.learn

        def learn_until_killed(trainer):
            nonlocal done
            if done == updates:
                raise Killed
            done += 1
            return learn(trainer)

        with monkeypatch.context() as patch:
            patch.setattr(OnPolicyTrainer, "learn", learn_until_killed)
            with pytest.raises(Killed):
                train(cfg)

    return run
