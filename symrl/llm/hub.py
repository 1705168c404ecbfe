"""Loading models, tokenizers and datasets by hub id or local folder, failing fast when offline.

The same ``from_pretrained`` call serves hub ids (users with internet) and the folders written by
``symrl lm prepare`` (offline presets): nothing else differs between the two paths.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from symrl.config import ConfigError
from symrl.paths import looked_for, resolve_path

HUB_HOST = "huggingface.co"
OFFLINE_HINT = ("use an offline preset (e.g. --preset imdb-offline-sppo, see `symrl presets`) after "
                "`symrl lm prepare` builds its models; for verifiable rewards, --preset arithmetic-grpo (offline "
                "verifiable task) after `symrl lm prepare --task arithmetic`")


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub: without network, transformers retries for ~25 s before failing."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def from_pretrained(loader: Any, name: str, *, field: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(name, **kwargs)`` with one clear error instead of a deep traceback.

    Download/loading progress bars are off: runs log to files and sweeps interleave processes.
    A local folder loads directly (a relative one from the symrl root, ``symrl.paths``); a hub id
    loads from the local cache if it is there, from the hub if the hub answers, and otherwise fails
    within seconds with a line naming ``field``.
    """
    _quiet()
    folder = resolve_path(name)
    if folder.is_dir():
        try:
            return loader.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{field}: {name!r} is a folder but could not be loaded ({_first_line(err)})") from None
    if not _looks_like_hub_id(name):
        raise ConfigError(f"{field}: {name!r} does not exist ({looked_for(name)}); allowed: a local folder (the "
                          "offline presets' models/imdb-offline is built by `make demo-rlhf` or `symrl lm prepare "
                          "--data ../shared/data/imdb_reviews_offline.jsonl.gz --out models/imdb-offline`) or a hub id")
    try:
        return loader.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise ConfigError(f"{field}: {name!r} is not in the local Hugging Face cache and the hub cannot be "
                          f"reached; {OFFLINE_HINT}")
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{field}: {name!r} could not be loaded from the hub ({_first_line(err)})") from None


def ensure_pad_token(tokenizer: Any, name: str, field: str) -> Any:
    """Batches need a pad token; a tokenizer without one (GPT-2's) pads with eos, masked out."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"{field}: the tokenizer of {name!r} has neither a pad nor an eos token; "
                              "allowed: a tokenizer with one of them")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _looks_like_hub_id(name: str) -> bool:
    """``owner/name`` or ``name`` (dots allowed: ``EleutherAI/pythia-1.4b``); a path-like name that
    is not a folder here is a missing folder, not a hub id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _quiet() -> None:
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    disable_progress_bars()
    logging.disable_progress_bar()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
