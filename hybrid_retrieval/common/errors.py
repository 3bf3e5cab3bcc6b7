"""The errors a user can fix, one class each; every entry point prints them as one line (no traceback).

A bottom module (standard library only): data, models, evaluation and the entry points all raise these.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input the user can fix: the message names the file / key and what was expected."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work: the key, the value given and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config {key}={value!r}: {allowed}")


def require_choice(key: str, value, choices, expected: str | None = None) -> None:
    """``value`` must be one of ``choices``, else :class:`ConfigError` naming ``key``. Each rule is a small function in
    the module that owns the setting (e.g. ``models.loss.check_similarity``); the object that uses the value and the
    fail-fast check (``runs/config_check.py``) both call it, so the rule and its message exist once."""
    if value not in choices:
        raise ConfigError(key, value, expected or f"expected one of {', '.join(map(str, choices))}")


class DataFormatError(UserError, ValueError):
    """Bad input data: names the file, the item and what was expected."""

    def __init__(self, file: str | Path, item: str, expected: str):
        self.file, self.item, self.expected = str(file), item, expected
        super().__init__(f"{file}: {item}: {expected}")


class SamplerError(UserError, ValueError):
    """Training data that cannot fill the batches asked for (batch size, α, languages): says what would fit."""


class ZeroShotError(UserError, ValueError):
    """Training data that overlaps the evaluation data (the zero-shot guard)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or does not fit the encoder: the message names the file."""
