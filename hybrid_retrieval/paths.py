"""Where things are: the package, the source checkout it runs from (if any), the Hydra configs, the project root.

A bottom module (standard library only), so that everything above it can ask without importing each other.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


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
