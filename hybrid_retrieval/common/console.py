"""One error path for every command: a user error is one line on stderr, ``error: <file or key>: <what was
expected>``, exit code 2, no traceback (it goes to the run's log file where there is one;
``HYBRID_RETRIEVAL_DEBUG=1`` re-raises instead). Anything else is a bug and keeps its traceback.

User errors: :class:`hybrid_retrieval.common.errors.UserError` (bad data, config, checkpoints, downloads, sampler
feasibility, the zero-shot guard), Hydra's errors for user overrides (unknown keys, unknown group options,
syntax), config values left missing (``???``), Lightning's own checks of trainer arguments, missing files and
unavailable devices.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from hydra import errors as hydra_errors
from omegaconf import errors as omegaconf_errors

from hybrid_retrieval.common.errors import UserError

DEBUG_ENV = "HYBRID_RETRIEVAL_DEBUG"
EXIT_USER_ERROR = 2
_NOISE = ("full_key:", "object_type", "reference_type", "Set the environment variable HYDRA_FULL_ERROR")

log = logging.getLogger(__name__)


def _flatten(*parts: object) -> str:
    lines = []
    for part in parts:
        text = str(part).split("Config search path:")[0]  # Hydra's list of where it looked: not for the user
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith(_NOISE) and line not in lines:
                lines.append(line)
    return "; ".join(lines)


def user_message(error: BaseException) -> str | None:
    """The one-line message for an error the user can fix, None for anything else (a bug)."""
    if isinstance(error, UserError):
        return _flatten(error)
    if isinstance(error, hydra_errors.InstantiationException):
        cause = error.__cause__
        inner = user_message(cause) if cause is not None else None
        if inner is not None:
            return inner
        if (cause is not None and isinstance(cause, TypeError | ValueError)) or "MisconfigurationException" in repr(cause):
            return _flatten(str(error).split("\n")[0], cause)
        return None
    if isinstance(error, hydra_errors.HydraException | omegaconf_errors.OmegaConfBaseException):
        cause = error.__cause__
        return _flatten(error, cause) if cause is not None else _flatten(error)
    if type(error).__name__ == "MisconfigurationException":  # Lightning's checks of its own arguments
        return _flatten(f"trainer: {error}")
    if isinstance(error, FileNotFoundError | FileExistsError | IsADirectoryError | NotADirectoryError | PermissionError):
        name = error.filename or ""
        return _flatten(f"{name}: {error.strerror or error}" if name else error)
    if isinstance(error, UnicodeDecodeError):
        return _flatten(f"not UTF-8 text ({error.reason} at byte {error.start})")
    if isinstance(error, RuntimeError) and ("CUDA" in str(error) or "device" in str(error).lower()):
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "no CUDA" in first or "not available" in first or "Torch not compiled" in first or "invalid device" in first:
            return _flatten(f"device: {first}")
    return None


def _to_log_files(error: BaseException) -> None:
    """The traceback into the file handlers that are open (a run's log), never onto the console."""
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "traceback of the error above", (), (type(error), error, error.__traceback__)
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def fail(message: str) -> None:
    """Print ``error: message`` and exit with the user-error code."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def exit_on_user_error(error: BaseException) -> None:
    """Inside a Hydra task: a user error becomes one line and exit code 2 (a SystemExit passes through Hydra
    without its "Error executing job" report); anything else is re-raised (``HYBRID_RETRIEVAL_DEBUG=1``: all)."""
    message = None if os.environ.get(DEBUG_ENV) else user_message(error)
    if message is None:
        raise error
    _to_log_files(error)
    fail(message)


def remove_unused_run_dir(out: Path) -> None:
    """A run that failed before doing anything leaves nothing behind: remove its directory if it holds only what
    Hydra put there (``.hydra/``, the job's ``.log``) or a failure marker. Under a launcher that starts every rank
    as its own process (srun, torchrun) the ranks share the directory: rank 0 removes it, the others leave it."""
    if any(os.environ.get(k, "0") != "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID")):
        return
    try:
        if out.is_dir() and all(p.name in (".hydra", "FAILED.json", "SKIPPED") or p.suffix == ".log" for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
    except FileNotFoundError:  # removed meanwhile by another process of the same run
        return


@contextlib.contextmanager
def user_errors(cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """Around a command's body: user errors become one line and exit code 2 (``cleanup`` runs first)."""
    try:
        yield
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        message = user_message(error)
        if message is None:
            raise
        _to_log_files(error)
        if cleanup is not None:
            cleanup()
        fail(message)


def install_hydra_error_handler() -> None:
    """Route errors in Hydra's phases (override parsing, composition, the task itself) through :func:`user_message`.

    Hydra prints its own multi-line report and exits 1 (``run_and_report``): ours prints one line and exits 2
    for user errors, and hands anything else back to Hydra's report (a bug keeps its traceback)."""
    import hydra._internal.utils as hydra_utils  # noqa: PLC0415 - private module, patched only by the entry points

    original = getattr(hydra_utils.run_and_report, "__wrapped_original__", hydra_utils.run_and_report)

    def run_and_report(func):
        try:
            return func()
        except Exception as error:
            if os.environ.get(DEBUG_ENV) or os.environ.get("HYDRA_FULL_ERROR"):
                raise
            message = user_message(error)
            if message is None:
                caught = error

                def again():
                    raise caught

                return original(again)
            _to_log_files(error)
            fail(message)

    run_and_report.__wrapped_original__ = original
    hydra_utils.run_and_report = run_and_report


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the same one-line errors (``error: prog: message (see --help)``, exit 2) as every command."""

    def error(self, message: str):
        fail(f"{self.prog}: {message} (see --help)")
