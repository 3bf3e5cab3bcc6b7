"""python -m hybrid_retrieval.data.download against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from hybrid_retrieval.common.atomic import sha256_of
from hybrid_retrieval.common.paths import find_data_dir
from hybrid_retrieval.data import download as dl
from hybrid_retrieval.data.lareqa import load_lareqa
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

    from hybrid_retrieval.common.errors import ConfigError
    from hybrid_retrieval.runs.config_check import validate_config
    from hybrid_retrieval.runs.sweeps import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=xquad_r", f"paths.data_dir={tmp_path / 'nothing'}"])
    with pytest.raises(ConfigError, match=r"python -m hybrid_retrieval\.data\.download"):
        validate_config(cfg)


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """A made-up dataset (two language files and a README) in dl.DATASETS, its files served on 127.0.0.1: the
    download's checksum, tampered-file, partial-file and --force paths run in a fresh clone, without ../shared/data."""
    import hashlib

    from tests.conftest import make_lareqa

    src = make_lareqa(tmp_path / "src" / "tiny-r", languages=("en", "de"), n_articles=2, seed=5, prefix="ti")
    (src / "README.md").write_text("a synthetic LAReQA-format set for the download tests\n")
    files = {}
    root = tmp_path / "served"
    for path in sorted(src.iterdir()):
        blob = path.read_bytes()
        files[path.name] = (f"tiny-r/{path.name}", hashlib.sha256(blob).hexdigest(), len(blob))
        (root / "c0ffee" / "tiny-r").mkdir(parents=True, exist_ok=True)
        (root / "c0ffee" / "tiny-r" / path.name).write_bytes(blob)
    monkeypatch.setitem(dl.DATASETS, "tiny-r", dl.Dataset("tiny-r", "c0ffee", "test licence", files))
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root / "c0ffee" / "tiny-r", src
    server.shutdown()
    server.server_close()


def test_synthetic_download_verifies_refuses_tampered_and_partial_files_and_forces(synthetic, tmp_path, capsys):
    url, served, src = synthetic
    dest = tmp_path / "data"
    assert dl.main(["tiny-r", "--dest", str(dest), "--base-url", url]) == 0
    assert "tiny-r: " in capsys.readouterr().out and load_lareqa(dest / "tiny-r").languages == ["de", "en"]
    assert all(sha256_of(dest / "tiny-r" / f) == sha for f, (_, sha, _) in dl.DATASETS["tiny-r"].files.items())
    assert dl.main(["tiny-r", "--dest", str(dest), "--base-url", "http://127.0.0.1:9"]) == 0  # complete: not fetched
    good = (served / "en.json").read_bytes()
    for name, blob in (("tampered", good[:-10] + b"tampered!!"), ("partial", good[: len(good) // 2])):
        (served / "en.json").write_bytes(blob)
        fresh = tmp_path / f"data-{name}"
        with pytest.raises(SystemExit) as exit_:
            dl.main(["tiny-r", "--dest", str(fresh), "--base-url", url])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and "en.json: checksum mismatch" in err[0], (name, err)
        assert not fresh.exists() or list(fresh.iterdir()) == []  # nothing kept, no temporary
        with pytest.raises(SystemExit):  # --force over the complete copy: the bad file never replaces it
            dl.main(["tiny-r", "--dest", str(dest), "--base-url", url, "--force"])
        capsys.readouterr()
        assert (dest / "tiny-r" / "en.json").read_bytes() == good and sorted(p.name for p in dest.iterdir()) == ["tiny-r"]
    (served / "en.json").write_bytes(good)
    (dest / "tiny-r" / "de.json").write_bytes(b"{}")  # a damaged local copy: incomplete, refused without --force
    with pytest.raises(SystemExit):
        dl.main(["tiny-r", "--dest", str(dest), "--base-url", url])
    assert "exists but is incomplete" in capsys.readouterr().err
    assert dl.main(["tiny-r", "--dest", str(dest), "--base-url", url, "--force"]) == 0
    assert (dest / "tiny-r" / "de.json").read_bytes() == (src / "de.json").read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["tiny-r"]  # the old copy swapped out and removed
