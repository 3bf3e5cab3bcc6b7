"""Bad input, every command: exit code 2, ONE line on stderr (``error: ...`` naming the file / line / key and what was
expected), no traceback, and nothing left behind (no run directory, no output folder). Each case is a subprocess,
as a user runs it; the probes of issue #30 are among them (marked ``#n``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import make_lareqa

pytestmark = pytest.mark.slow  # ~50 subprocesses


class _CreatesAFile:
    """Pickled as builtins.open(path, "w"): whoever unpickles it creates ``path`` (harmless stand-in for any code)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir) -> dict:
    """Tiny benchmarks, broken files of every kind, and a place where nothing may appear."""
    root = tmp_path_factory.mktemp("bad-input")
    w = {"root": root, "model": tiny_model_dir}
    w["train"] = make_lareqa(root / "train-r", languages=("en", "de", "es"), n_articles=4, seed=1, prefix="tr")
    w["eval"] = make_lareqa(root / "eval-r", languages=("en", "de", "es", "fr"), n_articles=2, seed=2, prefix="ev")
    broken = make_lareqa(root / "broken-r", languages=("en", "de"), n_articles=2, seed=3, prefix="br")
    (broken / "de.json").write_text('{"version": "1.1", "data": [', encoding="utf-8")
    w["broken"] = broken

    def jsonl(name: str, lines: list[str]) -> Path:
        path = root / name
        path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
        return path

    item = {"id": "a", "langs": {"en": {"query": "q", "positive": "p"}, "de": {"query": "f", "positive": "a"}}}
    w["four"] = jsonl("four.jsonl", [json.dumps({**item, "id": f"i{i}"}) for i in range(4)])
    w["bad_json"] = jsonl("bad.jsonl", [json.dumps(item), "{not json"])
    w["empty"] = jsonl("empty.jsonl", [])
    w["one_lang"] = jsonl(
        "en.jsonl", [json.dumps({"id": f"e{i}", "langs": {"en": {"query": f"q{i}", "positive": f"p{i}"}}}) for i in range(40)]
    )
    latin1 = root / "latin1.jsonl"
    latin1.write_bytes(json.dumps(item).replace('"q"', '"caf\\u00e9"').encode().replace(b"\\u00e9", b"\xe9") + b"\n")
    w["latin1"] = latin1
    w["truncated_ckpt"] = root / "truncated.ckpt"
    w["truncated_ckpt"].write_bytes(b"PK\x03\x04 half a checkpoint")
    w["evil_ckpt"] = root / "evil.ckpt"  # unpickling it would create PWNED: a checkpoint that runs code
    torch.save({"state_dict": {}, "payload": _CreatesAFile(str(root / "PWNED"))}, w["evil_ckpt"])
    w["good_corpus"] = jsonl("docs.jsonl", [json.dumps({"id": "d1", "text": "a document"})])
    w["foreign_dir"] = root / "foreign"
    w["foreign_dir"].mkdir()
    (w["foreign_dir"] / "notes.txt").write_text("mine")
    w["corpus_bad"] = jsonl("corpus.jsonl", ["{oops"])
    w["csv_wrong"] = root / "wrong.csv"
    w["csv_wrong"].write_text("a,b\n1,2\n")
    sweep = root / "sweep" / "0"
    (sweep / ".hydra").mkdir(parents=True)
    (sweep / ".hydra" / "config.yaml").write_text("data:\n  batch_size: 4\n  sampler:\n    alpha: 0.5\nseed: 0\n")
    (sweep / "final_metrics.json").write_text('{"metrics": ')
    w["sweep"] = root / "sweep"
    return w


def _train(w, *extra: str) -> list[str]:
    return [
        "hybrid_retrieval.train",
        f"data.train.root={w['train']}",
        f"data.eval.root={w['eval']}",
        f"model.encoder.name={w['model']}",
        "model.encoder.max_length=32",
        "data.batch_size=4",
        "logger=none",
        f"paths.log_dir={w['root']}/logs",
        f"hydra.run.dir={w['root']}/run",
        *extra,
    ]


def _evaluate(w, *extra: str) -> list[str]:
    return [
        "hybrid_retrieval.evaluate",
        f"data.root={w['eval']}",
        f"encoder.name={w['model']}",
        f"hydra.run.dir={w['root']}/run",
        *extra,
    ]


def _jsonl(w, name: str, *extra: str) -> list[str]:
    return _train(w, "data.train.format=jsonl", f"data.train.path={w[name]}", *extra)


CUDA = torch.cuda.is_available()
CASES = [
    # (id, argv builder, fragment the one line must contain)
    ("unknown-key", lambda w: _train(w, "data.foo=1"), "Could not override 'data.foo'"),
    ("unknown-group-option", lambda w: _train(w, "model=nope"), "Could not find 'model/nope'"),
    ("unknown-experiment", lambda w: [*_train(w), "+experiment=nope"], "Could not find 'experiment/nope'"),
    ("override-syntax", lambda w: _train(w, "data.batch_size=[1"), "no viable alternative"),
    ("#3 float-seed", lambda w: _train(w, "seed=1.5"), "seed=1.5: expected a non-negative integer"),
    ("batch-0", lambda w: _train(w, "data.batch_size=0"), "data.batch_size=0: expected an integer >= 1"),
    ("alpha-2", lambda w: _train(w, "data.sampler.alpha=2"), "data.sampler.alpha=2: expected a probability in [0, 1]"),
    ("epochs-text", lambda w: _train(w, "trainer.max_epochs=abc"), "trainer.max_epochs='abc'"),
    ("endless-fit", lambda w: _train(w, "trainer.max_epochs=-1"), "needs trainer.max_steps > 0"),
    ("max-questions-0", lambda w: _train(w, "data.eval.max_questions=0"), "data.eval.max_questions=0"),
    ("no-data", lambda w: _train(w, "data.train.root=/nonexistent/mlqa-r"), "python -m hybrid_retrieval.data.download"),
    ("unknown-language", lambda w: _train(w, "data.train.languages=[en,xx]"), "unknown language 'xx'"),
    ("fp16", lambda w: _train(w, "trainer.precision=16-mixed"), "use bf16-mixed or 32-true"),
    ("negative-lr", lambda w: _train(w, "model.optimizer.lr=-1"), "positive learning rate"),
    ("chunk-0", lambda w: _train(w, "model.grad_cache.chunk_size=0"), "model.grad_cache.chunk_size=0"),
    ("ckpt-missing", lambda w: _train(w, f"ckpt_path={w['root']}/none.ckpt"), "ckpt_path="),
    ("ckpt-truncated", lambda w: _train(w, f"ckpt_path={w['truncated_ckpt']}"), "not a complete PyTorch checkpoint"),
    ("ckpt-unsafe", lambda w: _train(w, f"ckpt_path={w['evil_ckpt']}"), "refused: loading it would import io.open"),
    ("model-dir-mistyped", lambda w: _train(w, f"model.encoder.name={w['root']}/no/such/model"), "no such model directory"),
    ("model-bad-hub-id", lambda w: _train(w, "model.encoder.name=not a//valid id"), "model.encoder.name="),
    ("jsonl-missing", lambda w: _train(w, "data.train.format=jsonl", f"data.train.path={w['root']}/no.jsonl"), "data.train.path"),
    ("jsonl-bad-line", lambda w: _jsonl(w, "bad_json"), "bad.jsonl: line 2: one JSON object per line"),
    ("#6 jsonl-not-utf8", lambda w: _jsonl(w, "latin1"), "latin1.jsonl: line 1: UTF-8 text"),
    ("jsonl-empty", lambda w: _jsonl(w, "empty"), "empty.jsonl: file: at least one parallel item"),
    ("#1 readme-batch-too-big", lambda w: _jsonl(w, "four", "data.batch_size=32"), "data.batch_size <= 4 fits"),
    ("#5 one-language-cross", lambda w: _jsonl(w, "one_lang", "data.sampler.alpha=0"), "need items in 2+ languages"),
    ("zero-shot-overlap", lambda w: _train(w, f"data.eval.root={w['train']}"), "data.allow_overlap=true overrides"),
    ("broken-benchmark", lambda w: _train(w, f"data.train.root={w['broken']}"), "de.json: line 1"),
    (
        "ddp-multirun",
        lambda w: ["hybrid_retrieval.train", "-m", *_train(w, "trainer=ddp_cpu", f"hydra.sweep.dir={w['root']}/sweepdir")[1:]],
        "basic launcher",
    ),
    # evaluate
    ("eval-no-dataset", lambda w: [*_evaluate(w), "data.root=/nonexistent/xquad-r"], "hybrid_retrieval.data.download"),
    ("#8 eval-batch-0", lambda w: _evaluate(w, "batch_size=0"), "batch_size=0: expected an integer >= 1"),
    ("eval-block-0", lambda w: _evaluate(w, "block=0"), "block=0"),
    ("eval-topk-0", lambda w: _evaluate(w, "run_topk=0"), "run_topk=0"),
    ("eval-language", lambda w: _evaluate(w, "data.languages=[zz]"), "unknown language 'zz'"),
    ("eval-ckpt-missing", lambda w: _evaluate(w, f"ckpt_path={w['root']}/none.ckpt"), "ckpt_path="),
    ("eval-ckpt-unsafe", lambda w: _evaluate(w, f"ckpt_path={w['evil_ckpt']}"), "refused: loading it would import"),
    ("eval-model-dir-mistyped", lambda w: _evaluate(w, "encoder.name=/no/such/model"), "no such model directory"),
    ("eval-adhoc-missing", lambda w: _evaluate(w, f"adhoc.root={w['root']}/nothing"), "adhoc.root="),
    ("eval-unknown-key", lambda w: _evaluate(w, "bogus=1"), "Could not override 'bogus'"),
    # export
    (
        "export-ckpt-missing",
        lambda w: ["hybrid_retrieval.export", f"{w['root']}/none.ckpt", f"{w['root']}/out"],
        "no such checkpoint file",
    ),
    (
        "export-ckpt-truncated",
        lambda w: ["hybrid_retrieval.export", str(w["truncated_ckpt"]), f"{w['root']}/out"],
        "not a readable PyTorch checkpoint",
    ),
    (
        "export-ckpt-unsafe",
        lambda w: ["hybrid_retrieval.export", str(w["evil_ckpt"]), f"{w['root']}/out"],
        "evil.ckpt: refused: loading it would import io.open",
    ),
    (
        "search-ckpt-unsafe",
        lambda w: [
            "hybrid_retrieval.search",
            "index",
            "--ckpt",
            str(w["evil_ckpt"]),
            "--corpus",
            str(w["good_corpus"]),
            "--index",
            f"{w['root']}/ix",
        ],
        "evil.ckpt: refused: loading it would import io.open",
    ),
    (
        "#4 export-foreign-dir",
        lambda w: ["hybrid_retrieval.export", str(w["truncated_ckpt"]), str(w["foreign_dir"])],
        "not empty and not an earlier export",
    ),
    ("export-no-args", lambda w: ["hybrid_retrieval.export"], "the following arguments are required"),
    # search
    (
        "#7 search-k-0",
        lambda w: ["hybrid_retrieval.search", "query", "--index", str(w["root"]), "-q", "x", "-k", "0"],
        "argument -k: expected an integer >= 1",
    ),
    (
        "search-not-an-index",
        lambda w: ["hybrid_retrieval.search", "query", "--index", f"{w['root']}/nothing", "-q", "x"],
        "not an index folder",
    ),
    ("search-no-query", lambda w: ["hybrid_retrieval.search", "query", "--index", str(w["root"])], "not an index folder"),
    (
        "search-corpus-missing",
        lambda w: ["hybrid_retrieval.search", "index", "--corpus", f"{w['root']}/no.tsv", "--index", f"{w['root']}/ix"],
        "no.tsv: file: an existing JSONL or TSV file",
    ),
    (
        "search-corpus-bad",
        lambda w: ["hybrid_retrieval.search", "index", "--corpus", str(w["corpus_bad"]), "--index", f"{w['root']}/ix"],
        "corpus.jsonl: line 1",
    ),
    (
        "search-bad-kind",
        lambda w: ["hybrid_retrieval.search", "index", "--corpus", "x", "--index", "y", "--kind", "ivf"],
        "argument --kind: invalid choice",
    ),
    # report
    (
        "#9 report-csv-columns",
        lambda w: ["hybrid_retrieval.report", "--csv", str(w["csv_wrong"]), "--out", f"{w['root']}/report"],
        "missing: status, alpha, batch_size",
    ),
    (
        "#10 report-corrupt-json",
        lambda w: ["hybrid_retrieval.report", str(w["sweep"]), "--out", f"{w['root']}/report"],
        "final_metrics.json: line 1",
    ),
    (
        "report-records-missing",
        lambda w: ["hybrid_retrieval.report", "--records", f"{w['root']}/none"],
        "an existing file or folder",
    ),
    ("report-nothing", lambda w: ["hybrid_retrieval.report"], "give a sweep directory, --csv or --records"),
    # inspect_data, download
    (
        "inspect-missing",
        lambda w: ["hybrid_retrieval.inspect_data", "--train", f"{w['root']}/none.jsonl"],
        "an existing JSONL file",
    ),
    (
        "inspect-batch-too-big",
        lambda w: ["hybrid_retrieval.inspect_data", "--train", str(w["four"]), "--batch-size", "32"],
        "data.batch_size <= 4 fits",
    ),
    (  # Hydra makes the run directory before any of our code runs: its error goes through the same one line
        "run-dir-is-a-file",
        lambda w: [a for a in _train(w) if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={w['four']}/sub"],
        "four.jsonl/sub: Not a directory",
    ),
    (
        "eval-run-dir-is-a-file",
        lambda w: [a for a in _evaluate(w) if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={w['four']}"],
        "four.jsonl: File exists",
    ),
    (
        "export-base-missing",
        lambda w: ["hybrid_retrieval.export", f"{w['root']}/none.ckpt", f"{w['root']}/out", "--base", "/no/such/model"],
        "--base /no/such/model: no such model directory",
    ),
    (
        "search-base-missing",
        lambda w: [
            "hybrid_retrieval.search",
            "index",
            "--corpus",
            str(w["four"]),
            "--index",
            f"{w['root']}/ix",
            "--base",
            "/no/such/model",
        ],
        "--base /no/such/model: no such model directory",
    ),
    (
        "search-index-under-a-file",
        lambda w: ["hybrid_retrieval.search", "index", "--corpus", str(w["four"]), "--index", f"{w['four']}/ix"],
        "is a file, not a folder",
    ),
    (
        "search-run-under-a-file",
        lambda w: ["hybrid_retrieval.search", "query", "--index", f"{w['root']}/ix", "-q", "x", "--run", f"{w['four']}/a.run"],
        "--run ",
    ),
    (
        "results-dir-is-a-file",
        lambda w: _train(w, f"results_dir={w['four']}"),
        "config results_dir=",
    ),
    (
        "download-unknown",
        lambda w: ["hybrid_retrieval.data.download", "squad", "--dest", f"{w['root']}/dl"],
        "unknown dataset 'squad'",
    ),
    (
        "download-dest-is-a-file",
        lambda w: ["hybrid_retrieval.data.download", "xquad-r", "--dest", str(w["four"]), "--base-url", "http://127.0.0.1:9"],
        "exists and is not a directory",
    ),
]
if not CUDA:
    CASES += [
        ("eval-device-cuda", lambda w: _evaluate(w, "device=cuda"), "CUDA is not available"),
        ("train-gpu", lambda w: _train(w, "trainer.accelerator=gpu"), "trainer"),
    ]
LEFT_BEHIND = ("run", "logs", "out", "ix", "report", "dl")


@pytest.mark.parametrize(("case", "argv", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_left(world, case, argv, fragment):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.pop("HYBRID_RETRIEVAL_DEBUG", None)
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", *argv(world)], cwd=world["root"], env=env, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    report = f"exit {proc.returncode}\nSTDERR\n{proc.stderr[-3000:]}\nSTDOUT\n{proc.stdout[-2000:]}"
    assert proc.returncode == 2, report
    assert len(lines) == 1 and lines[0].startswith("error: "), report
    assert fragment in lines[0], report
    assert "Traceback" not in proc.stdout + proc.stderr, report
    assert not (Path(world["root"]) / "PWNED").exists(), "a checkpoint's pickle ran code"
    left = [name for name in LEFT_BEHIND if (Path(world["root"]) / name).exists()]
    assert left == [], f"left behind: {left}\n{report}"
    assert (world["foreign_dir"] / "notes.txt").read_text() == "mine" and len(list(world["foreign_dir"].iterdir())) == 1


def test_resume_refuses_a_last_checkpoint_that_would_run_code(world, tmp_path):
    """resume=true picks the run directory's checkpoints/last.ckpt: an unsafe one is refused before it loads."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(world["evil_ckpt"].read_bytes())
    argv = [*_train(world, f"hydra.run.dir={run}", "resume=true", "trainer.max_steps=1", "data.eval.max_questions=8")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: {run / 'checkpoints' / 'last.ckpt'}: "), lines[0]
    assert "refused: loading it would import io.open" in lines[0]
    assert not (world["root"] / "PWNED").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()  # refused, not deleted: the user's file stays
