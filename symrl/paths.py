"""Where the relative paths of models and data are read from: the symrl root, not the current directory.

The offline presets name ``models/imdb-offline/...`` (built by ``symrl lm prepare``) and the review
corpus ``../shared/data/imdb_reviews_offline.jsonl.gz``; they resolve the same from any directory:
against ``$SYMRL_HOME`` when it is set, else against the checkout that holds the ``symrl`` package
(the folder with its ``pyproject.toml``; an editable install), else, for a plain installed package,
the current directory. Absolute and ``~`` paths are taken as they are. Run outputs (``out=``) stay
relative to the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_VARIABLE = "SYMRL_HOME"


def project_root() -> Path:
    """``$SYMRL_HOME``, else the symrl checkout, else (an installed package) the current directory."""
    home = os.environ.get(ROOT_VARIABLE)
    if home:
        return Path(home).expanduser().absolute()
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


def resolve_path(value: str | Path) -> Path:
    """``value`` itself when absolute (or ``~``), else the same path under ``project_root()``."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else project_root() / path


def looked_for(value: str | Path) -> str:
    """For error messages: where a path was looked for, and why there."""
    path = resolve_path(value)
    if Path(value).expanduser().is_absolute():
        return f"looked for {path}"
    origin = (f"${ROOT_VARIABLE}" if os.environ.get(ROOT_VARIABLE)
              else f"the symrl root; set ${ROOT_VARIABLE} to read them from elsewhere")
    return f"looked for {path}: relative paths are read from {project_root()} ({origin})"
