"""Reading local text corpora: JSON lines, optionally gzip-compressed (``.jsonl`` / ``.jsonl.gz``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from symrl.config import ConfigError
from symrl.paths import looked_for, resolve_path


def read_records(path: str | Path, field: str = "data") -> list[dict]:
    """Every JSON object of a JSONL file (a relative path from the symrl root, ``symrl.paths``);
    ``field`` names the config key in error messages."""
    given, path = path, resolve_path(path)
    if not path.is_file():
        raise ConfigError(f"{field}: {str(given)!r} does not exist ({looked_for(given)}); "
                          "allowed: a .jsonl or .jsonl.gz file")
    opener = gzip.open if path.suffix == ".gz" else open
    records = []
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{field}: {path}:{number} is not valid JSON") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{field}: {path}:{number} is not a JSON object")
            records.append(record)
    if not records:
        raise ConfigError(f"{field}: {path} holds no records")
    return records


def texts(records: list[dict], key: str, field: str = "data") -> list[str]:
    """The ``key`` string of every record, or an error naming the key and the keys found."""
    missing = next((r for r in records if not isinstance(r.get(key), str)), None)
    if missing is not None:
        raise ConfigError(f"{field}: a record has no string '{key}' (keys found: {', '.join(missing)})")
    return [r[key] for r in records]
