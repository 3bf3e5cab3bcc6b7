"""A regular (non-editable) install: the wheel ships the configs and console scripts, and the package run
from site-packages finds its configs there, writes below the working directory and records its version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _installed_copy(tmp_path: Path) -> Path:
    """site/hybrid_retrieval with conf/ inside, as the wheel lays it out (no checkout beside it)."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "hybrid_retrieval", site / "hybrid_retrieval", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "conf", site / "hybrid_retrieval" / "conf")
    return site


def _run(code_or_args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_RETRIEVAL_")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, *code_or_args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_installed_layout_finds_shipped_configs_and_records_its_version(tmp_path):
    site, work = _installed_copy(tmp_path), tmp_path / "elsewhere"
    work.mkdir()
    code = (
        "import hybrid_retrieval.common.paths as u, hybrid_retrieval.runs.sweeps as s;"
        "print(u.CONFIG_DIR); print(u.project_root()); print(s.code_version())"
    )
    proc = _run(["-c", code], site, work)
    assert proc.returncode == 0, proc.stderr
    config_dir, root, version = proc.stdout.split("\n")[:3]
    assert config_dir == str(site / "hybrid_retrieval" / "conf")
    assert root == str(work)  # runs and data are found from where the command runs
    assert "installed" in version or version == "unknown"  # never the git HEAD of some repository around the cwd
    assert REPO.name not in version


def test_installed_layout_composes_the_experiment_from_another_directory(tmp_path):
    site, work = _installed_copy(tmp_path), tmp_path / "elsewhere"
    work.mkdir()
    proc = _run(["-m", "hybrid_retrieval.train", "+experiment=xquad_r", "--cfg", "job"], site, work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "task_name: xquad_r" in proc.stdout and "name: mlqa-r" in proc.stdout  # the shipped experiment config
    assert "optimized_metric: val/multi/map_best" in proc.stdout
    bad = _run(["-m", "hybrid_retrieval.train", "+experiment=no_such"], site, work)
    assert bad.returncode != 0 and "no_such" in bad.stderr


@pytest.mark.slow
def test_wheel_ships_configs_license_and_console_scripts(tmp_path):
    pytest.importorskip("setuptools", minversion="64")  # the build backend (pyproject.toml), used without isolation
    src = tmp_path / "src"  # a clean copy: the build must not depend on (or write into) this checkout
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "logs", "build", "*.egg-info", "__pycache__", "docs"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("hybrid_retrieval-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for conf in (REPO / "conf").rglob("*.yaml"):
        assert f"hybrid_retrieval/conf/{conf.relative_to(REPO / 'conf').as_posix()}" in names, conf
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), sorted(names)[-10:]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("hr-train", "hr-evaluate", "hr-search", "hr-export", "hr-report", "hr-inspect-data"):
        assert f"{script} = hybrid_retrieval." in text, script


def test_every_place_states_the_same_minimum_python():
    """setup.cfg, the README, ruff's target and environment.yml agree (the code uses 3.11 APIs: datetime.UTC)."""
    import configparser
    import re
    import tomllib

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["options"]["python_requires"].strip() == ">=3.11"
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["target-version"] == "py311"
    assert re.search(r"^\s*- python=3\.11\b", (REPO / "environment.yml").read_text(), re.M)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "Python 3.11+" in readme and "3.10" not in readme


def test_every_module_level_import_is_a_declared_dependency():
    """A third-party package imported at a module's top level is in ``install_requires`` (not only installed
    because another package pulls it in: psutil, pillow and huggingface_hub were, once). Optional extras import
    inside functions."""
    import ast
    import configparser
    import re
    import sys
    from importlib.metadata import packages_distributions

    def canon(name: str) -> str:
        return name.lower().replace("_", "-")

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [ln.strip() for ln in cfg["options"]["install_requires"].splitlines()]
    declared = {canon(re.split(r"[<>=!~\[ ;]", ln)[0]) for ln in lines if ln and not ln.startswith("#")}
    distributions = packages_distributions()
    missing: dict[str, str] = {}
    for path in sorted((REPO / "hybrid_retrieval").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("__future__", "hybrid_retrieval"):
                    continue
                if not {canon(d) for d in distributions.get(top, [top])} & declared:
                    missing.setdefault(top, str(path.relative_to(REPO)))
    assert not missing, f"imported at module level but not in install_requires: {missing}"
