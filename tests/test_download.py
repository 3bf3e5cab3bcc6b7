"""python -m hybrid_retrieval.data.download against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from hybrid_retrieval.atomic import sha256_of
from hybrid_retrieval.data import download as dl
from hybrid_retrieval.data.lareqa import load_lareqa
from hybrid_retrieval.paths import find_data_dir
from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "xquad-r" / "en.json").exists(), reason="no ../shared/data copy here")


@pytest.fixture
def mirror(tmp_path):
    """A folder laid out as the repository's raw files (<commit>/<path>), served on 127.0.0.1; yields (url, root)."""
    root = tmp_path / "mirror"
    for ds in dl.DATASETS.values():
        for local, (repo_path, _, _) in ds.files.items():
            target = root / ds.commit / repo_path
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(SHARED / ds.name / local)
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@needs_shared
def test_download_verifies_every_file_and_the_copy_loads(mirror, tmp_path, capsys):
    url, _ = mirror
    dest = tmp_path / "data"
    assert dl.main(["xquad-r", "mlqa-r", "--dest", str(dest), "--base-url", url]) == 0
    out = capsys.readouterr().out
    assert "xquad-r: " in out and "13 files verified" in out and "CC BY-NC" in out
    for name, ds in dl.DATASETS.items():
        assert sorted(p.name for p in (dest / name).iterdir()) == sorted(ds.files)
        assert all(sha256_of(dest / name / f) == sha for f, (_, sha, _) in ds.files.items())
    assert load_lareqa(dest / "xquad-r").summary() == load_lareqa(SHARED / "xquad-r").summary()
    assert sorted(p.name for p in dest.iterdir()) == ["mlqa-r", "xquad-r"]  # no temporaries left
    assert dl.main(["xquad-r", "--dest", str(dest), "--base-url", "http://127.0.0.1:9"]) == 0  # complete: not fetched


@needs_shared
def test_a_corrupt_file_is_a_clear_error_and_nothing_is_kept(mirror, tmp_path, capsys):
    url, root = mirror
    bad = root / dl.DATASETS["xquad-r"].commit / "xquad-r" / "de.json"
    bad.unlink()
    bad.write_bytes((SHARED / "xquad-r" / "de.json").read_bytes()[:-10] + b"tampered!!")
    dest = tmp_path / "data"
    with pytest.raises(SystemExit) as exit_:
        dl.main(["xquad-r", "--dest", str(dest), "--base-url", url])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: http://127.0.0.1") and "de.json: checksum mismatch" in err[0]
    assert not dest.exists() or list(dest.iterdir()) == []  # no half-written dataset, no temporary


def test_an_unreachable_server_and_an_unknown_name_are_one_line_each(tmp_path, capsys):
    for argv in (["xquad-r", "--dest", str(tmp_path), "--base-url", "http://127.0.0.1:9"], ["squad", "--dest", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_:
            dl.main(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "download failed" in err[0] and "unknown dataset 'squad'" in err[1]
    assert list(tmp_path.iterdir()) == []


def test_data_lookup_order(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    root.mkdir()
    shared, cache = tmp_path / "shared" / "data", tmp_path / "cache"
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(cache))
    monkeypatch.delenv("HYBRID_RETRIEVAL_DATA", raising=False)
    assert Path(find_data_dir(root)) == root / ".." / "shared" / "data"  # nothing anywhere: the default (then a hint)
    (cache / "data" / "mlqa-r").mkdir(parents=True)
    assert Path(find_data_dir(root)) == cache / "data"
    (shared / "xquad-r").mkdir(parents=True)
    assert Path(find_data_dir(root)).resolve() == shared.resolve()
    monkeypatch.setenv("HYBRID_RETRIEVAL_DATA", str(tmp_path / "mine"))
    assert Path(find_data_dir(root)) == tmp_path / "mine"


def test_missing_data_names_the_download_command(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from hybrid_retrieval.config_check import validate_config
    from hybrid_retrieval.errors import ConfigError
    from hybrid_retrieval.sweeps import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=xquad_r", f"paths.data_dir={tmp_path / 'nothing'}"])
    with pytest.raises(ConfigError, match=r"python -m hybrid_retrieval\.data\.download"):
        validate_config(cfg)
