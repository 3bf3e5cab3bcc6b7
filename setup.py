"""Ships the top-level ``conf/`` (the source of the configs) inside the wheel as ``hybrid_retrieval/conf``.

An editable install (``pip install -e .``) reads ``conf/`` of the checkout directly; a regular install
(``pip install .``) copies it into the package, so the commands run from any directory.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "hybrid_retrieval" / "conf"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ROOT / "conf", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
