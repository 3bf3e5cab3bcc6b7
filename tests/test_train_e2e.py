"""End to end through the real CLI (Hydra + Lightning) on tiny data and a tiny random encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Every test here runs the CLI in fresh processes: `pytest -m "not slow"` is the quick loop (CI runs all).
pytestmark = pytest.mark.slow


def merge(*groups: list[str]) -> list[str]:
    """Hydra rejects a key given twice: later groups replace earlier values of the same key."""
    out: dict[str, str] = {}
    for group in groups:
        for arg in group:
            out[arg.split("=", 1)[0]] = arg
    return list(out.values())


def run_cli(
    args: list[str], tmp_path: Path, timeout: int = 600, env: dict | None = None, check: bool = True, multirun: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python -m hybrid_retrieval.train`` from ``tmp_path`` (outputs must not depend on the cwd)."""
    if env is None:
        env = {**os.environ, "WANDB_MODE": "offline"}
        env.pop("WANDB_API_KEY", None)
    env = {**env, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "hybrid_retrieval.train", *(["-m"] if multirun else []), *merge(args)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT\n{proc.stdout[-4000:]}\nSTDERR\n{proc.stderr[-6000:]}")
    return proc


def tiny_overrides(tiny_data, tiny_model_dir, run_dir):
    train, evald = tiny_data
    return [
        f"data.train.root={train}",
        f"data.eval.root={evald}",
        f"model.encoder.name={tiny_model_dir}",
        "model.encoder.max_length=32",
        "data.batch_size=4",
        "data.sampler.batches_per_epoch=3",
        "data.eval_batch_size=16",
        "trainer.max_epochs=2",
        f"hydra.run.dir={run_dir}",
        "seed=0",
        "callbacks.resume_checkpoint.every_n_train_steps=2",
    ]


def test_train_cli_single_process(tiny_data, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "logger=csv"], tmp_path)
    assert "run finished" in proc.stdout and str(run_dir) in proc.stdout
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["global_step"] == 6
    m = summary["metrics"]
    for key in ("val/mono/map", "val/cross/map", "val/multi/map", "val/multi/rank_distance", "val/en-de/map", "val/fr-all/map"):
        assert key in m, key
    assert 0.0 < m["val/multi/map"] <= 1.0
    assert Path(summary["best_checkpoint"]).exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    finished = proc.stdout.split("run finished", 1)[1]  # the console's headline: the LAReQA macro numbers
    for key in ("val/mono/map", "val/cross/map", "val/multi/map", "val/multi/rank_distance", "val/multi/map_best"):
        assert f"  {key} " in finished, finished
    record = json.loads((run_dir / "result.json").read_text())  # the job record keeps every language pair
    assert record["pairs"]["en-de"]["map"] == pytest.approx(m["val/en-de/map"]) and "rank_distance" in record["pairs"]["fr-all"]
    startup = record["startup"]  # the time to the first step, per phase (all before it, none overlapping)
    phases = startup["phases_s"]
    assert {"imports and config", "evaluation data", "training items", "zero-shot guard", "sampler", "model load"} <= set(phases)
    assert 0 < sum(phases.values()) <= startup["to_first_step_s"] + 0.1 and startup["peak_rss_mb"] > 100
    assert "first training step starts after" in proc.stdout + proc.stderr
    assert (run_dir / "eval" / "epoch001.json").exists()
    assert (run_dir / "csv").exists()
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("trainer", ["default", "ddp_cpu"])
def test_a_run_capped_mid_epoch_by_max_steps_ends_evaluated(tiny_data, tiny_model_dir, tmp_path, trainer):
    """max_steps=4 with 3 batches an epoch stops one step into epoch 1: the final weights are evaluated once (on every
    rank under DDP), final_metrics.json holds the value, and the console names a checkpoint that exists."""
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "logger=csv", "trainer.max_steps=4", f"trainer={trainer}"]
    proc = run_cli(args, tmp_path)
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["global_step"] == 4 and summary["value"] is not None and "val/cross/map" in summary["metrics"]
    assert (proc.stdout + proc.stderr).count("evaluating the final weights") == 1
    evals = sorted(p.name for p in (run_dir / "eval").glob("*.json"))
    assert evals == ["epoch000.json", "validate-step000004.json"], evals
    assert json.loads((run_dir / "eval" / evals[-1]).read_text())["step"] == 4
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("checkpoint "))
    named = line.split(None, 1)[1].strip()
    assert named != "(none)" and Path(named).exists() and Path(named) == Path(summary["best_checkpoint"])
    assert (run_dir / "checkpoints" / "final-step4.ckpt").exists()


def test_train_cli_wandb_offline_no_prompt(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = tmp_path / "run"
    env_home = tmp_path / "home"
    env_home.mkdir()
    monkeypatch.setenv("HOME", str(env_home))  # no ~/.netrc, no W&B credentials
    args = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "trainer.max_epochs=1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # no WANDB_MODE, no key
    run_cli(args, tmp_path, env={**env, "HYBRID_RETRIEVAL_CACHE": str(tmp_path / "cache")})
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert runs, "expected an offline W&B run directory"


def test_debug_fast_dev_run_evaluates(tiny_data, tiny_model_dir, tmp_path):
    """debug=fast_dev_run: 2 steps inside a longer epoch (as an experiment's), then the evaluation still runs."""
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "debug=fast_dev_run", "data.sampler.batches_per_epoch=30"]
    run_cli(args, tmp_path)
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["global_step"] == 2 and 0 < summary["metrics"]["val/multi/map"] <= 1


def test_zero_shot_guard_refuses_same_benchmark(tiny_data, tiny_model_dir, tmp_path):
    _, evald = tiny_data
    args = [*tiny_overrides(tiny_data, tiny_model_dir, tmp_path / "run"), f"data.train.root={evald}", "logger=none"]
    proc = run_cli(args, tmp_path, check=False)
    assert proc.returncode == 2 and "refusing to train on the evaluation data (zero-shot)" in proc.stderr
    assert not (tmp_path / "run").exists()  # failed before training: nothing left behind


@pytest.mark.slow
def test_train_cli_ddp_cpu_two_processes(tiny_data, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "trainer=ddp_cpu", "logger=csv", "trainer.max_epochs=1"]
    run_cli(args, tmp_path)
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["global_step"] == 3 and "val/multi/map" in summary["metrics"]
    # torchmetrics epoch means, synchronised over the 2 gloo ranks at epoch end (a batch is mono on all ranks or none)
    assert min(abs(summary["metrics"]["train/mono_fraction"] - k / 3) for k in range(4)) < 1e-6
    assert 0 < summary["metrics"]["train/loss_epoch"] < 10


FROZEN = ["model.encoder.train_layers=1", "model.encoder.prefix_cache=true"]


@pytest.mark.parametrize("extra", [[], FROZEN], ids=["full", "frozen_prefix"])
def test_resume_after_sigkill_matches_uninterrupted_run(tiny_data, tiny_model_dir, tmp_path, monkeypatch, extra):
    """Kill at step 5 (mid-epoch, after the step-4 checkpoint), resume, compare with a clean run."""
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    common = [
        *extra,
        "logger=none",
        "trainer.deterministic=true",
        "trainer.max_epochs=2",
        "data.sampler.batches_per_epoch=4",
        "model.loss.learnable_temperature=true",
    ]
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    run_cli([*tiny_overrides(tiny_data, tiny_model_dir, clean_dir), *common], tmp_path)
    env_args = [
        *tiny_overrides(tiny_data, tiny_model_dir, killed_dir),
        *common,
        "+callbacks.kill._target_=tests.helpers.KillAtStep",
        "+callbacks.kill.step=7",
    ]
    proc = run_cli(env_args, tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL: no clean shutdown
    assert not (killed_dir / "final_metrics.json").exists()
    assert not list((killed_dir / "checkpoints").glob("*.tmp-*"))  # no half-written checkpoint left behind
    proc = run_cli([*tiny_overrides(tiny_data, tiny_model_dir, killed_dir), *common, "resume=true"], tmp_path)
    log = proc.stdout + proc.stderr
    # It really resumed (a restart from scratch would also reach the same numbers):
    assert "resume=true: continuing from" in log and "resume-step6.ckpt" in log, log[-3000:]
    assert "resuming epoch 1 after 2 batches" in log, log[-3000:]
    clean = json.loads((clean_dir / "final_metrics.json").read_text())
    resumed = json.loads((killed_dir / "final_metrics.json").read_text())
    assert resumed["global_step"] == clean["global_step"] == 8
    assert resumed["resumed_from_step"] == 6 and clean["resumed_from_step"] is None  # recorded with the job
    for key in ("val/mono/map", "val/cross/map", "val/multi/map", "val/multi/rank_distance", "train/loss", "train/temperature"):
        assert abs(resumed["metrics"][key] - clean["metrics"][key]) <= 1e-6, (key, resumed["metrics"][key], clean["metrics"][key])
    for key in ("val/multi/map_best", "val/cross/map_best", "val/multi/rank_distance_best"):  # best over BOTH epochs
        assert abs(resumed["metrics"][key] - clean["metrics"][key]) <= 1e-6, (key, resumed["metrics"][key], clean["metrics"][key])


def test_sigterm_saves_a_resume_checkpoint_and_the_requeued_run_matches(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    """SIGTERM during step 6 (as SLURM pre-empts): the step finishes, a resume checkpoint is saved, exit 143 within
    30 s; the same command with resume=true ends where an uninterrupted run ends."""
    sigterm_then_resume(tiny_data, tiny_model_dir, tmp_path, monkeypatch)


def test_a_stop_before_the_first_periodic_checkpoint_then_a_kill_resumes_from_the_newest(
    tiny_data, tiny_model_dir, tmp_path, monkeypatch
):
    """SIGTERM at step 0 (before the first periodic checkpoint, every 3 steps), resume, SIGKILL after step 7, resume.
    Before: the SIGTERM's last.ckpt was not the periodic callback's own, so after the first resume it linked
    last-v1.ckpt instead, and the second resume went back to step 1 from the stale last.ckpt (seen in the #40
    study: a job resumed from step 22 instead of 160). Now the second resume continues from step 6, and the end
    matches an uninterrupted run."""
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    common = ["logger=none", "trainer.deterministic=true", "data.sampler.batches_per_epoch=4"]
    common += ["callbacks.resume_checkpoint.every_n_train_steps=3"]
    clean_dir, run_dir = tmp_path / "clean", tmp_path / "run"
    run_cli([*tiny_overrides(tiny_data, tiny_model_dir, clean_dir), *common], tmp_path)
    args = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), *common]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    term = ["+callbacks.term._target_=tests.helpers.SigtermAtStep", "+callbacks.term.step=0"]
    term += [f"+callbacks.term.once_file={tmp_path / 'sigterm_sent'}"]
    assert run_cli([*args, *term], tmp_path, env=env, check=False).returncode == 143
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "last.ckpt").resolve().name == "resume-step1.ckpt"
    kill = ["+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=7"]
    kill += [f"+callbacks.kill.once_file={tmp_path / 'killed'}"]
    proc = run_cli([*args, *kill, "resume=true"], tmp_path, env=env, check=False)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (ckpts / "last.ckpt").resolve().name == "resume-step6.ckpt", sorted(p.name for p in ckpts.iterdir())
    assert not list(ckpts.glob("last-v*.ckpt"))
    proc = run_cli([*args, "resume=true"], tmp_path)
    log = proc.stdout + proc.stderr
    assert "resume=true: continuing from" in log and "resume-step6.ckpt" in log, log[-3000:]
    clean = json.loads((clean_dir / "final_metrics.json").read_text())
    resumed = json.loads((run_dir / "final_metrics.json").read_text())
    assert resumed["global_step"] == clean["global_step"] == 8 and resumed["resumed_from_step"] == 6
    for key in ("val/cross/map", "val/multi/map", "train/loss", "val/multi/map_best"):
        assert abs(resumed["metrics"][key] - clean["metrics"][key]) <= 1e-6, (key, resumed["metrics"][key], clean["metrics"][key])


@pytest.mark.slow
def test_sigterm_under_two_process_ddp_saves_a_resume_checkpoint_and_the_requeued_run_matches(
    tiny_data, tiny_model_dir, tmp_path, monkeypatch
):
    """Both ranks get SIGTERM at step 5 (as SLURM signals every task). Lightning's own handler hung here until the
    600 s timeout (a broadcast inside the signal handler); now every rank stops after the step and every rank's RNG
    state is in the checkpoint, so the resumed run ends within 1e-6 of the uninterrupted one."""
    sigterm_then_resume(tiny_data, tiny_model_dir, tmp_path, monkeypatch, extra_overrides=("trainer=ddp_cpu",))


@pytest.mark.slow
def test_sigterm_during_validation_saves_the_state_before_it_and_the_resumed_run_matches(
    tiny_data, tiny_model_dir, tmp_path, monkeypatch
):
    """SIGTERM at the first batch of the validation after step 4 (the end of epoch 0): the validation is abandoned,
    the resume checkpoint is the state after step 4, and the resumed run validates again and ends as an
    uninterrupted run (before, no checkpoint was written: the run restarted from its last periodic one, or step 0)."""
    sigterm_then_resume(tiny_data, tiny_model_dir, tmp_path, monkeypatch, signal_at="validation", step=4)


@pytest.mark.slow
def test_sigterm_at_the_last_step_of_an_epoch_defers_to_its_validation_and_resumes_into_the_next_epoch(
    tiny_data, tiny_model_dir, tmp_path, monkeypatch
):
    """SIGTERM at the start of step 3, the last of epoch 0: the stop waits for the epoch's validation (Lightning
    resumes an end-of-step checkpoint as "validated"), and the resumed run trains all of epoch 1 (before, resuming
    at an epoch's last batch skipped the next epoch's batches too and ended at step 4 of 8)."""
    sigterm_then_resume(tiny_data, tiny_model_dir, tmp_path, monkeypatch, step=3, saved_at=4)


def sigterm_then_resume(
    tiny_data,
    tiny_model_dir,
    tmp_path,
    monkeypatch,
    extra_overrides=(),
    signal_at: str = "step",
    step: int = 5,
    saved_at: int | None = None,
):
    """The SIGTERM test's body; ``extra_overrides`` (e.g. ``trainer=gpu``) run it on another path (tests/test_cuda.py).
    ``signal_at``: at the start of training step ``step`` (the resume checkpoint is step + 1's), or in the validation
    after step ``step`` (the resume checkpoint is step's)."""
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    common = ["logger=none", "trainer.deterministic=true", "trainer.max_epochs=2", "data.sampler.batches_per_epoch=4"]
    common += list(extra_overrides)
    common += ["callbacks.resume_checkpoint.every_n_train_steps=100"]  # no periodic checkpoint: only the SIGTERM one
    clean_dir, stopped_dir = tmp_path / "clean", tmp_path / "stopped"
    run_cli([*tiny_overrides(tiny_data, tiny_model_dir, clean_dir), *common], tmp_path)
    sent = tmp_path / "sigterm_sent"
    args = [*tiny_overrides(tiny_data, tiny_model_dir, stopped_dir), *common]
    helper = {"step": "SigtermAtStep", "validation": "SigtermInValidation"}[signal_at]
    extra = [
        f"+callbacks.term._target_=tests.helpers.{helper}",
        f"+callbacks.term.step={step}",
        f"+callbacks.term.once_file={sent}",
    ]
    if saved_at is None:
        saved_at = step + 1 if signal_at == "step" else step
    proc = run_cli([*args, *extra], tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    ended = time.time()
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert ended - float(sent.read_text()) < 30
    assert "resume=true" in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr
    assert (stopped_dir / "checkpoints" / "last.ckpt").resolve().name == f"resume-step{saved_at}.ckpt"
    assert not (stopped_dir / "final_metrics.json").exists()
    proc = run_cli([*args, "resume=true"], tmp_path)
    assert f"resume-step{saved_at}.ckpt" in proc.stdout + proc.stderr
    clean = json.loads((clean_dir / "final_metrics.json").read_text())
    resumed = json.loads((stopped_dir / "final_metrics.json").read_text())
    assert resumed["global_step"] == clean["global_step"] == 8
    for key in ("val/mono/map", "val/cross/map", "val/multi/map", "val/multi/rank_distance", "train/loss", "val/multi/map_best"):
        assert abs(resumed["metrics"][key] - clean["metrics"][key]) <= 1e-6, (key, resumed["metrics"][key], clean["metrics"][key])


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_nonfinite_loss_raise_or_skip(tiny_data, tiny_model_dir, tmp_path, mode):
    run_dir = tmp_path / "run"
    args = [
        *tiny_overrides(tiny_data, tiny_model_dir, run_dir),
        "logger=none",
        "trainer.max_epochs=1",
        "model.loss._target_=tests.helpers.NaNAtStepLoss",
        "+model.loss.nan_at_call=2",
        f"model.nonfinite={mode}",
    ]
    proc = run_cli(args, tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    if mode == "raise":
        assert proc.returncode != 0
        assert "NonFiniteLossError: non-finite loss at global step 1 (rank 0 loss nan, batch 1, query langs" in proc.stderr, (
            proc.stderr[-3000:]
        )
        assert (run_dir / "FAILED.json").exists()
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((run_dir / "final_metrics.json").read_text())
        assert summary["skipped_batches"] == 1 and "batch skipped (1 so far)" in proc.stdout + proc.stderr


def test_csv_logger_works_when_wandb_cannot_be_imported(tiny_data, tiny_model_dir, tmp_path):
    blocker = tmp_path / "block"
    (blocker / "wandb").mkdir(parents=True)
    (blocker / "wandb" / "__init__.py").write_text("raise ImportError('wandb blocked for this test')\n")
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "logger=csv", "trainer.max_epochs=1"]
    run_cli(args, tmp_path, env={**os.environ, "PYTHONPATH": str(blocker)})
    assert (run_dir / "final_metrics.json").exists() and (run_dir / "csv").exists()


def test_multirun_failed_job_is_recorded_and_others_finish(tiny_data, tiny_model_dir, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [a for a in tiny_overrides(tiny_data, tiny_model_dir, tmp_path / "unused") if not a.startswith("hydra.run")]
    args = merge(args, ["logger=none", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep_dir}", "data.batch_size=4,4096"])
    run_cli(args, tmp_path, multirun=True)
    assert (sweep_dir / "0" / "final_metrics.json").exists()
    failed = json.loads((sweep_dir / "1" / "FAILED.json").read_text())
    assert "batch_size=4096 exceeds every" in failed["error"]
    from hybrid_retrieval.report import collect

    df, pairs = collect(sweep_dir)
    assert list(df.status) == ["ok", "failed"]
    assert set(pairs.job) == {"0"} and len(pairs) > 0  # per-pair rows of the finished job only


def test_frozen_prefix_checkpoint_small_and_loads_into_evaluate(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    """Checkpoints of frozen-prefix runs hold only the top layers (+ optimizer); evaluate restores the rest
    from the configured base model, and refuses a different base model."""
    import torch

    from hybrid_retrieval.models.checkpoint import load_checkpoint_into
    from hybrid_retrieval.models.encoder import DualEncoder

    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    run_cli([*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "logger=none", *FROZEN], tmp_path)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all(".layer.1." in k or k.startswith("loss_fn.") for k in keys), keys
    assert ckpt["frozen_prefix"]["train_layers"] == 1 and any(".layer.0." in k for k in ckpt["frozen_prefix"]["keys"])
    assert (run_dir / "checkpoints" / "last.ckpt").stat().st_size < 1_000_000  # the full tiny model is ~33 MB
    enc = DualEncoder(name=str(tiny_model_dir), max_length=32)
    before = enc.query_model.encoder.layer[1].output.dense.weight.clone()
    load_checkpoint_into(enc, str(run_dir / "checkpoints" / "last.ckpt"))
    assert not torch.equal(before, enc.query_model.encoder.layer[1].output.dense.weight)
    other = DualEncoder(name=str(tiny_model_dir), max_length=32)
    with torch.no_grad():
        other.query_model.encoder.layer[0].output.dense.weight.add_(1e-3)
    with pytest.raises(ValueError, match="holds only the top 1 layers; its frozen lower layers must come from the same base"):
        load_checkpoint_into(other, str(run_dir / "checkpoints" / "last.ckpt"))


@pytest.mark.parametrize("extra", [[], FROZEN], ids=["full", "frozen_prefix"])
def test_evaluate_cli_reproduces_training_metrics_from_checkpoint(tiny_data, tiny_model_dir, tmp_path, monkeypatch, extra):
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    # (a larger lr for the frozen prefix: 6 small steps of one layer leave the ranking unchanged)
    lr = ["model.optimizer.lr=5e-3"] if extra else []
    run_cli([*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "logger=none", *extra, *lr], tmp_path)
    trained = json.loads((run_dir / "final_metrics.json").read_text())["metrics"]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    cmd = [
        sys.executable,
        "-m",
        "hybrid_retrieval.evaluate",
        f"data.root={tiny_data[1]}",
        "dataset=eval-r",
        f"encoder.name={tiny_model_dir}",
        "encoder.max_length=32",
        f"ckpt_path={ckpt}",
        *(f"encoder.{a.split('.', 2)[2]}" for a in extra),
        f"hydra.run.dir={out}",
        "run_topk=5",
        "wandb=true",
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("mono/map", "cross/map", "multi/map", "multi/rank_distance", "en-fr/map"):
        assert summary["per_setting"][key] == pytest.approx(trained[f"val/{key}"], abs=1e-4), key
    assert (out / "matrices" / "map.csv").exists() and (out / "matrices" / "map.png").exists()
    assert list((out / "wandb").glob("offline-run-*"))  # evaluate logged to W&B (offline)
    runs = out / "runs"
    assert (runs / "en-de.run").exists() and (runs / "fr-all.run").exists() and (runs / "qrels.all.txt").exists()
    first = (runs / "en-de.run").read_text().splitlines()[0].split()
    assert first[1] == "Q0" and first[2].startswith("de/") and first[3] == "1"
    # An untrained encoder gives different numbers: the checkpoint really was loaded.
    cmd_untrained = [c for c in cmd if not c.startswith(("ckpt_path=", "wandb="))]
    cmd_untrained[-2] = f"hydra.run.dir={tmp_path / 'eval0'}"
    subprocess.run(
        cmd_untrained, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True, capture_output=True, timeout=600
    )
    base = json.loads((tmp_path / "eval0" / "summary.json").read_text())["per_setting"]
    assert base["multi/map"] != pytest.approx(summary["per_setting"]["multi/map"], abs=1e-4)


def _study_args(tiny_data, tiny_model_dir, tmp_path, sweep_dir, results_dir):
    """A 4-job frozen-prefix sweep on the tiny fixtures with the study's config (2 batch sizes × 2 seeds)."""
    train, evald = tiny_data
    return [
        "+experiment=xquad_r",
        "+sweep=study_xquad_r",
        f"data.train.root={train}",
        f"data.eval.root={evald}",
        f"model.encoder.name={tiny_model_dir}",
        "model.encoder.max_length=32",
        "model.encoder.train_layers=1",
        "data.eval_batch_size=16",
        "data.sampler.min_pool=8",
        "data.sampler.alpha=0.5",
        "budget.steps=4",
        "callbacks.resume_checkpoint.every_n_train_steps=2",
        "trainer.deterministic=true",
        "logger=none",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra:job.num}",
        f"results_dir={results_dir}",
        "data.batch_size=4,8",
        "seed=0,1",
    ]


def _records(results_dir: Path) -> dict:
    return {p.name: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}


@pytest.mark.slow
def test_sweep_killed_mid_job_resumes_and_matches_uninterrupted(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    clean = _study_args(tiny_data, tiny_model_dir, tmp_path, tmp_path / "clean", tmp_path / "clean_results")
    proc = run_cli(clean, tmp_path, multirun=True, env=env)
    assert "[sweep] 4/4 jobs done (0 failed, 0 skipped)" in proc.stdout, proc.stdout[-3000:]
    expected = _records(tmp_path / "clean_results")
    assert len(expected) == 4 and all(r["status"] == "ok" and r["steps"] == 4 for r in expected.values())
    assert not list((tmp_path / "clean").glob("*/checkpoints"))  # finished jobs delete their resume checkpoint

    args = _study_args(tiny_data, tiny_model_dir, tmp_path, tmp_path / "sweep", tmp_path / "results")
    kill = ["+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=3", "+callbacks.kill.job_num=2"]
    kill.append(f"+callbacks.kill.once_file={tmp_path / 'killed'}")
    proc = run_cli([*args, *kill], tmp_path, multirun=True, env=env, check=False)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert len(_records(tmp_path / "results")) == 2  # jobs 1-2 finished, job 3 killed after step 3
    assert (tmp_path / "sweep" / "2" / "checkpoints" / "last.ckpt").exists()

    proc = run_cli([*args, *kill], tmp_path, multirun=True, env=env)
    log = proc.stdout + proc.stderr
    assert log.count("already ok") == 2 and "[sweep] 4/4 jobs done (0 failed, 2 skipped)" in log, log[-3000:]
    assert "resume=true: continuing from" in log and "resume-step2.ckpt" in log
    got = _records(tmp_path / "results")
    assert got.keys() == expected.keys()
    for name, rec in got.items():
        ref = expected[name]
        assert rec["steps"] == ref["steps"] and rec["sampling"] == ref["sampling"]
        for k in ("val/mono/map", "val/cross/map", "val/multi/map", "val/multi/rank_distance", "train/loss"):
            assert abs(rec["metrics"][k] - ref["metrics"][k]) <= 1e-6, (name, k)

    # A fresh machine with only the committed records (no logs): every job is skipped.
    proc = run_cli(
        _study_args(tiny_data, tiny_model_dir, tmp_path, tmp_path / "fresh", tmp_path / "results"), tmp_path, multirun=True
    )
    assert "[sweep] 4/4 jobs done (0 failed, 4 skipped)" in proc.stdout, proc.stdout[-3000:]
    assert not list((tmp_path / "fresh").glob("*/result.json"))

    # A record taken away (a job a design change supersedes): that job runs again in the directory where it
    # was skipped before, and its stale SKIPPED marker does not make it count as skipped.
    gone = sorted((tmp_path / "results").glob("*.json"))[0]
    gone.rename(tmp_path / "superseded.json")
    proc = run_cli(
        _study_args(tiny_data, tiny_model_dir, tmp_path, tmp_path / "fresh", tmp_path / "results"), tmp_path, multirun=True
    )
    assert "[sweep] 4/4 jobs done (0 failed, 3 skipped)" in proc.stdout, proc.stdout[-3000:]
    assert gone.exists() and len(list((tmp_path / "fresh").glob("*/SKIPPED"))) == 3


def test_bad_override_and_ddp_multirun_give_one_line(tiny_data, tiny_model_dir, tmp_path):
    """CLI, not only validate_config: a bad value prints one line (key, value, what is allowed), exit 2."""
    base = tiny_overrides(tiny_data, tiny_model_dir, tmp_path / "run")
    proc = run_cli([*base, "data.sampler.alpha=2", "logger=none"], tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: config data.sampler.alpha=2: expected a probability in [0, 1]"
    args = [a for a in base if not a.startswith("hydra.run")]
    args += ["trainer=ddp_cpu", "logger=none", f"hydra.sweep.dir={tmp_path / 'sweep'}", "seed=0,1"]
    proc = run_cli(args, tmp_path, check=False, multirun=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: config trainer.strategy='ddp': DDP in a multirun (-m)") and "submitit_slurm" in last


@pytest.mark.slow
def test_ddp_nan_on_one_rank_both_ranks_skip(tiny_data, tiny_model_dir, tmp_path):
    """NaN loss on rank 0 only: the skip decision is all-reduced, so both ranks skip the same step and
    their weights stay finite and identical."""
    import torch

    run_dir = tmp_path / "run"
    args = [
        *tiny_overrides(tiny_data, tiny_model_dir, run_dir),
        "trainer=ddp_cpu",
        "logger=none",
        "trainer.max_epochs=1",
        "model.loss._target_=tests.helpers.NaNAtStepLoss",
        "+model.loss.nan_at_call=2",
        "+model.loss.rank=0",
        "model.nonfinite=skip",
        "+callbacks.save_params._target_=tests.helpers.SaveParamsAtEnd",
        f"+callbacks.save_params.out_dir={tmp_path / 'params'}",
    ]
    proc = run_cli(args, tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    log = proc.stdout + proc.stderr
    assert "rank 1 loss" in log and "rank 0 loss nan" in log, log[-3000:]  # both ranks saw the skip
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["skipped_batches"] == 1 and summary["global_step"] == 2  # 3 batches, one skipped: 2 optimizer steps
    r0, r1 = (torch.load(tmp_path / "params" / f"rank{r}.pt") for r in (0, 1))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.isfinite(r0[k]).all() and torch.equal(r0[k], r1[k]), k


def test_console_shows_each_message_once_and_no_noise(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    """What a new user sees: every log line once, none of Lightning's/W&B's unactionable notices; train.log
    keeps everything."""
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    args = [
        *tiny_overrides(tiny_data, tiny_model_dir, run_dir),
        "trainer.max_epochs=1",
        *FROZEN,
        "callbacks.progress_bar.refresh_rate=0",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = run_cli(args, tmp_path, env={**env, "HOME": str(tmp_path)})
    console = proc.stdout + proc.stderr
    lines = [ln for ln in console.splitlines() if ln.startswith("[20")]  # log records
    assert lines and len(lines) == len(set(lines)), [ln for ln in lines if lines.count(ln) > 1][:3]
    from hybrid_retrieval.runs.session import CONSOLE_NOISE

    for noise in CONSOLE_NOISE:
        assert noise not in console, noise
    log = (run_dir / "train.log").read_text()
    assert "module(s) in eval mode" in log  # the frozen prefix's eval-mode note: kept in the file


@pytest.mark.slow
def test_submitit_local_launcher_sweep_and_report(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    """The cluster path on one machine: each job in its own process through hydra-submitit-launcher."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    sweep = tmp_path / "sweep"
    args = [a for a in tiny_overrides(tiny_data, tiny_model_dir, tmp_path / "unused") if not a.startswith("hydra.run")]
    args = merge(
        args,
        [
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "logger=none",
            "trainer.max_epochs=1",
            f"hydra.sweep.dir={sweep}",
            f"results_dir={tmp_path / 'records'}",
            "data.batch_size=4,8",
        ],
    )
    run_cli(args, tmp_path, multirun=True)
    assert len(list((tmp_path / "records").glob("*.json"))) == 2
    assert list(sweep.glob(".submitit/*"))  # the jobs really went through submitit
    from hybrid_retrieval.report import collect, collect_records

    df, _ = collect(sweep)
    assert list(df.status) == ["ok", "ok"] and sorted(df.batch_size) == [4, 8]
    recs, _ = collect_records(tmp_path / "records")
    assert sorted(recs.batch_size) == [4, 8] and (recs.status == "ok").all()


def test_wandb_media_logged_without_explicit_step(monkeypatch):
    """The heatmap and table must not carry step= (W&B drops a step below its own counter, which
    Lightning's per-step logging advances, e.g. with log_every_n_steps=1); they ride on trainer/global_step."""
    import types

    import numpy as np
    from lightning.pytorch.loggers import WandbLogger

    from hybrid_retrieval.evaluation.lareqa_eval import EvalResult
    from hybrid_retrieval.tasks.text.evaluators import LareqaEvaluator

    calls = []

    class FakeRun:
        def log(self, payload, **kwargs):
            calls.append((payload, kwargs))

    logger = WandbLogger.__new__(WandbLogger)
    monkeypatch.setattr(WandbLogger, "experiment", property(lambda self: FakeRun()))
    trainer = types.SimpleNamespace(loggers=[logger], global_step=7)
    langs = ["en", "de"]
    result = EvalResult(
        languages=langs,
        pair={"map": np.eye(2), "r@1": np.eye(2)},
        multi={"map": np.ones(2)},
        n_queries=np.ones((2, 2), dtype=int),
    )
    LareqaEvaluator()._to_wandb(trainer, result)
    ((payload, kwargs),) = calls
    assert "step" not in kwargs and payload["trainer/global_step"] == 7
    assert {"val/pairs", "val/map_heatmap"} <= payload.keys()


def test_real_fit_trains_on_the_samplers_batches_and_epochs_differ(tiny_data, tiny_model_dir, tmp_path):
    """Under Lightning, set_epoch reaches the hybrid batch sampler: the batches of a real 2-epoch fit are
    exactly global_batches() for (seed, epoch 0) then (seed, epoch 1), and the two epochs differ."""
    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.data.pairs import items_from_lareqa
    from hybrid_retrieval.data.sampler import HybridBatchSampler

    rec = tmp_path / "batches.jsonl"
    args = [
        *tiny_overrides(tiny_data, tiny_model_dir, tmp_path / "run"),
        "logger=none",
        "seed=3",
        "+callbacks.rec._target_=tests.helpers.RecordBatches",
        f"+callbacks.rec.path={rec}",
    ]
    run_cli(args, tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    seen = [json.loads(line) for line in rec.read_text().splitlines()]
    items = items_from_lareqa(load_lareqa(tiny_data[0]))
    sampler = HybridBatchSampler([it.languages for it in items], batch_size=4, alpha=0.5, batches_per_epoch=3, seed=3)
    expected = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        expected += [
            [epoch, [e.item for e in b], [e.query_lang for e in b], [e.passage_lang for e in b]] for b in sampler.global_batches()
        ]
    assert seen == expected
    assert [r[1:] for r in seen[:3]] != [r[1:] for r in seen[3:]]


@pytest.mark.slow
@pytest.mark.parametrize("mask", [False, True])
def test_ddp_fit_equals_single_process_fit(tiny_data, tiny_model_dir, tmp_path, mask):
    """trainer=ddp_cpu (2 ranks × 2 pairs, gathered negatives) ends with identical parameters on both ranks,
    equal (≤ 1e-4) to one process training on the same global batches of 4 (dropout off); with
    loss.mask_duplicates too (the passages' keys are gathered with them)."""
    import shutil

    import torch
    from transformers import AutoConfig

    model_dir = tmp_path / "no-dropout"
    shutil.copytree(tiny_model_dir, model_dir)
    cfg = AutoConfig.from_pretrained(model_dir)
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    cfg.save_pretrained(model_dir)
    common = [
        *tiny_overrides(tiny_data, model_dir, tmp_path / "unused"),
        "logger=none",
        "trainer.max_epochs=1",
        "model.optimizer.lr=1e-3",  # big enough steps that a wrong gradient would show
        "+callbacks.save_params._target_=tests.helpers.SaveParamsAtEnd",
        f"model.loss.mask_duplicates={str(mask).lower()}",
    ]
    if mask:  # 4 questions per paragraph over 2 answer sentences: batches of 4 hold shared answers
        from tests.conftest import make_lareqa

        dup = make_lareqa(tmp_path / "dup-train", n_articles=2, sents=2, qpp=4, seed=5, prefix="dup")
        common.append(f"data.train.root={dup}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [("ddp", ["trainer=ddp_cpu"]), ("single", [])]
    if mask:  # a third run without masking shows the fixture's batches really hold duplicates
        runs.append(("plain", ["model.loss.mask_duplicates=false"]))
    for name, extra in runs:
        args = [*common, *extra, f"hydra.run.dir={tmp_path / name}", f"+callbacks.save_params.out_dir={tmp_path / name / 'p'}"]
        run_cli(args, tmp_path, env=env)
    r0, r1 = (torch.load(tmp_path / "ddp" / "p" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "single" / "p" / "rank0.pt")
    assert r0.keys() == r1.keys() == single.keys()
    start = torch.load(tmp_path / "single" / "p" / "rank0_start.pt")
    for k in single:
        assert torch.equal(r0[k], r1[k]), k
        assert float((r0[k] - single[k]).abs().max()) <= 1e-4, k
    # not vacuous: training moved the weights far more than the tolerance
    assert max(float((single[k] - start[k]).abs().max()) for k in single) > 1e-3
    if mask:
        plain = torch.load(tmp_path / "plain" / "p" / "rank0.pt")
        assert max(float((plain[k] - single[k]).abs().max()) for k in single) > 1e-3


def test_kill_during_checkpoint_write_then_resume(tiny_data, tiny_model_dir, tmp_path):
    """SIGKILL in the middle of writing the second checkpoint: last.ckpt still loads (the first one), the
    rerun resumes from it, and the dead process's temporary file is removed."""
    import torch

    run_dir = tmp_path / "run"
    common = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "logger=none", "trainer.max_epochs=2"]
    kill = [
        "trainer.plugins.0._target_=tests.helpers.KillDuringSave",
        "+trainer.plugins.0.kill_at=2",
        f"+trainer.plugins.0.once_file={tmp_path / 'killed'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = run_cli([*common, *kill], tmp_path, env=env, check=False)
    assert proc.returncode == -9, proc.stderr[-3000:]
    ckpts = run_dir / "checkpoints"
    assert list(ckpts.glob("*.tmp-*"))  # the half-written file of the killed save
    state = torch.load(ckpts / "last.ckpt", weights_only=False)  # still a complete checkpoint
    assert state["global_step"] == 2
    proc = run_cli([*common, *kill, "resume=true"], tmp_path, env=env)
    log = proc.stdout + proc.stderr
    assert "resume=true: continuing from" in log and "resume-step2.ckpt" in log, log[-3000:]
    assert json.loads((run_dir / "final_metrics.json").read_text())["global_step"] == 6
    assert not list(ckpts.glob("*.tmp-*"))


def test_export_loads_in_sentence_transformers_with_our_embeddings(tiny_data, tiny_model_dir, tmp_path):
    """The exported directory: SentenceTransformer(out).encode(..., prompt_name=...) gives the project's own
    embeddings (cosine >= 0.9999) in several languages, and AutoModel loads it as a plain transformers model."""
    st = pytest.importorskip("sentence_transformers")
    import torch
    from transformers import AutoModel

    from hybrid_retrieval.evaluation.encode import encode_texts
    from hybrid_retrieval.export import main
    from hybrid_retrieval.models.checkpoint import encoder_from_checkpoint

    run_dir = tmp_path / "run"
    run_cli([*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "logger=none", "model.optimizer.lr=5e-3"], tmp_path)
    out = tmp_path / "exported"
    main([str(run_dir / "checkpoints" / "last.ckpt"), str(out)])
    # weights as safetensors only: nothing in the export needs unpickling to load
    assert list(out.rglob("*.safetensors")) and not [
        p for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")
    ]
    model = st.SentenceTransformer(str(out), device="cpu")
    assert model.max_seq_length == 32
    # loaded as saved, without a (randomly initialised, "missing weights") pooler our towers never had
    assert model[0].auto_model.pooler is None
    ours = encoder_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    texts = ["How long is the Danube?", "Wie lang ist die Donau?", "¿Cuánto mide el Danubio?", "多瑙河有多长？", "Дунай длинный"]
    for kind in ("query", "passage"):
        a = torch.as_tensor(model.encode(texts, prompt_name=kind, convert_to_numpy=True))
        b = encode_texts(ours, texts, kind)
        assert float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min()) >= 0.9999, kind
    # sentence-transformers >= 5: encode_query / encode_document (and MTEB's prompt types) use the same prefixes
    assert model.prompts["document"] == model.prompts["passage"] == ours.passage_prefix != ""
    if hasattr(model, "encode_document"):
        for encode, kind in ((model.encode_query, "query"), (model.encode_document, "passage")):
            got = torch.as_tensor(encode(texts, convert_to_numpy=True))
            assert float((got - encode_texts(ours, texts, kind)).abs().max()) <= 1e-6, kind
    untrained = encode_texts(ours.__class__(name=str(tiny_model_dir), max_length=32).eval(), texts, "passage")
    assert float(torch.nn.functional.cosine_similarity(untrained, a, dim=-1).min()) < 0.9999  # the trained weights went out
    assert AutoModel.from_pretrained(out).config.hidden_size == 32
