"""Where things are: the package, the source checkout it runs from (if any), the Hydra configs, the project root.

A bottom module (standard library only), so that everything above it can ask without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # hybrid_retrieval/ (this file is in hybrid_retrieval/common/)


def checkout_root() -> Path | None:
    """The source checkout this package runs from (editable install or PYTHONPATH), if any."""
    candidate = PACKAGE_DIR.parent
    return candidate if (candidate / "conf" / "train.yaml").exists() else None


def config_dir() -> str:
    """Absolute path of the Hydra configs: the checkout's ``conf/`` (the source), else the copy that a regular
    ``pip install .`` ships inside the package (``hybrid_retrieval/conf``, see setup.py)."""
    root = checkout_root()
    if root is not None:
        return str(root / "conf")
    shipped = PACKAGE_DIR / "conf"
    if (shipped / "train.yaml").exists():
        return str(shipped)
    raise FileNotFoundError(f"no configs: neither {PACKAGE_DIR.parent / 'conf'} nor {shipped} holds train.yaml")


CONFIG_DIR = config_dir()


def project_root() -> str:
    """The checkout root (the folder holding conf/ beside the package); for an installed package the current
    directory (so logs/ and ../shared/data are found from where the command runs; see conf/paths)."""
    root = checkout_root()
    return str(root) if root is not None else str(Path.cwd())


def cache_root() -> Path:
    """Where converted models, prefix caches and downloaded data live: ``$HYBRID_RETRIEVAL_CACHE`` or the user
    cache dir (``$XDG_CACHE_HOME/hybrid_retrieval``, default ``~/.cache/hybrid_retrieval``)."""
    env = os.environ.get("HYBRID_RETRIEVAL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hybrid_retrieval"


def data_cache_dir() -> Path:
    """Where ``python -m hybrid_retrieval.data.download`` puts the benchmarks by default."""
    return cache_root() / "data"


BENCHMARKS = ("xquad-r", "mlqa-r")
DOWNLOAD_HINT = "fetch them with: python -m hybrid_retrieval.data.download  (or set paths.data_dir / HYBRID_RETRIEVAL_DATA)"


def find_data_dir(root_dir: str | Path) -> str:
    """``paths.data_dir`` when not overridden: ``$HYBRID_RETRIEVAL_DATA``, else ``{root_dir}/../shared/data`` if it
    holds a benchmark, else the download cache if it does, else ``../shared/data`` (the config check then names
    the missing folder and the download command)."""
    env = os.environ.get("HYBRID_RETRIEVAL_DATA")
    if env:
        return str(Path(env).expanduser())
    shared = Path(root_dir) / ".." / "shared" / "data"
    for candidate in (shared, data_cache_dir()):
        if any((candidate / name).is_dir() for name in BENCHMARKS):
            return str(candidate)
    return str(shared)


def file_in_the_way(folder: str | Path) -> Path | None:
    """The file sitting where ``folder`` or a folder above it must be (None: the folder can be made or exists).
    Output folders of every command are checked with it before any work starts."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None
