"""Hydra composition (experiments, sweeps, budget rules) and config validation: one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import omegaconf
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from hybrid_retrieval.common.errors import ConfigError
from hybrid_retrieval.runs.config_check import validate_config
from hybrid_retrieval.runs.sweeps import budget_steps, register_resolvers, scaled_lr

REPO = Path(__file__).resolve().parents[1]
register_resolvers()


def make_cfg(overrides: list[str], data_root: Path | None = None):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if data_root is not None:
        with open_dict(cfg):
            cfg.paths.data_dir = str(data_root)
    return cfg


@pytest.fixture
def data_root(tiny_data):
    train, evald = tiny_data
    root = train.parent
    (root / "mlqa-r").symlink_to(train)
    (root / "xquad-r").symlink_to(evald)
    return root


def test_experiments_compose_and_validate(data_root):
    for exp, train, evald in (("xquad_r", "mlqa-r", "xquad-r"), ("mlqa_r", "xquad-r", "mlqa-r")):
        cfg = make_cfg([f"+experiment={exp}"], data_root)
        assert cfg.data.train.name == train and cfg.data.eval.name == evald
        assert cfg.trainer.use_distributed_sampler is False
        assert cfg.model.optimizer._partial_ is True
        validate_config(cfg)
    assert "experiment" not in OmegaConf.to_container(make_cfg([]), resolve=False)


@pytest.mark.parametrize(("batch", "steps", "chunk"), [(16, 256, 16), (64, 64, 32), (1024, 4, 32)])
def test_sweep_budget_pairs(batch, steps, chunk):
    cfg = make_cfg(["+experiment=xquad_r", "+sweep=batch_size", f"data.batch_size={batch}"])
    assert cfg.data.sampler.batches_per_epoch == steps  # same number of pairs seen: 4096
    assert cfg.model.grad_cache.chunk_size == chunk
    assert cfg.model.optimizer.lr == pytest.approx(3e-5)
    assert cfg.callbacks.model_checkpoint is None
    assert cfg.trainer.enable_checkpointing is False  # no Lightning default checkpoint either


def test_sweep_grid_is_declared():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=xquad_r", "+sweep=batch_size"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["data.batch_size"] == "16,64,256,1024" and params["data.sampler.alpha"] == "0,0.5,1"
    assert params["seed"] == "0,1"


def test_budget_and_lr_rules():
    assert budget_steps("pairs", 4096, 32, 1000) == 5 and budget_steps("steps", 4096, 32, 1000) == 32
    assert scaled_lr("sqrt", 1e-5, 128, 32) == pytest.approx(2e-5) and scaled_lr("linear", 1e-5, 128, 32) == pytest.approx(4e-5)
    with pytest.raises(ValueError, match=r"budget\.mode='epochs'"):
        budget_steps("epochs", 1, 1, 1)


BAD = [  # (override, key named in the message, fragment of what is allowed)
    ("data.batch_size=0", "data.batch_size", "integer >= 1"),
    ("data.batch_size=-4", "data.batch_size", "integer >= 1"),
    ("data.batch_size=abc", "data.batch_size", "integer >= 1"),
    ("data.sampler.alpha=1.5", "data.sampler.alpha", "[0, 1]"),
    ("data.sampler.alpha=-0.1", "data.sampler.alpha", "[0, 1]"),
    ("data.sampler.alpha=true", "data.sampler.alpha", "[0, 1]"),
    ("data.sampler.cross_mode=pair", "data.sampler.cross_mode", "'batch' or 'example'"),
    ("data.sampler.batches_per_epoch=0", "data.sampler.batches_per_epoch", ">= 1 or null"),
    ("data.train.languages=[en,xx]", "data.train.languages", "unknown language 'xx'"),
    ("data.eval.languages=[zz]", "data.eval.languages", "unknown language 'zz'"),
    ("data.eval.languages=[]", "data.eval.languages", "non-empty list"),
    ("data.train.root=/nonexistent/mlqa-r", "data.train.root", "existing path"),
    ("data.eval.root=/nonexistent/xquad-r", "data.eval.root", "existing path"),
    ("data.train.format=csv", "data.train.format", "lareqa, jsonl, parquet, arrow, aligned"),
    ("data.hard_negatives=-1", "data.hard_negatives", ">= 0"),
    ("data.num_workers=-2", "data.num_workers", ">= 0"),
    ("data.eval_batch_size=0", "data.eval_batch_size", ">= 1"),
    ("model.grad_cache.chunk_size=64", "model.grad_cache.chunk_size", "<= data.batch_size (32)"),
    ("model.grad_cache.chunk_size=0", "model.grad_cache.chunk_size", ">= 1 or null"),
    ("model.encoder.max_length=4", "model.encoder.max_length", ">= 8"),
    ("model.encoder.pooling=max", "model.encoder.pooling", "'mean' or 'cls'"),
    ("model.encoder.train_layers=0", "model.encoder.train_layers", ">= 1 or null"),
    ("model.encoder.prefix_cache=true", "model.encoder.prefix_cache", "needs model.encoder.train_layers"),
    ("model.encoder.prefix_cache_dtype=bf16", "model.encoder.prefix_cache_dtype", "'fp16' or 'fp32'"),
    ("model.loss.temperature=0", "model.loss.temperature", "positive"),
    ("model.loss.similarity=l2", "model.loss.similarity", "'cosine' or 'dot'"),
    ("model.loss.mask_duplicates=yes_please", "model.loss.mask_duplicates", "true or false"),
    ("model.optimizer.lr=-1", "model.optimizer.lr", "positive learning rate"),
    ("model.nonfinite=ignore", "model.nonfinite", "'raise' or 'skip'"),
    ("trainer.devices=3", "data.batch_size", "divisible by trainer.devices=3"),
    ("trainer.precision=16-mixed", "trainer.precision", "use bf16-mixed or 32-true"),
    ("data.sampler.alpha_schedule=uniform", "data.sampler.alpha_schedule", "bernoulli, stratified"),
    ("data.sampler.min_pool=0", "data.sampler.min_pool", ">= 1 or null"),
    ("model.encoder.name=no-such-org/no-such-model", "model.encoder.name", "offline"),
    ("data.dev.fraction=1.0", "data.dev.fraction", "a share in (0, 1)"),
    ("data.validate_on=dev", "data.validate_on", "needs data.dev.fraction"),
    ("data.validate_on=test", "data.validate_on", "eval, dev"),
    ("data.eval.max_questions=0", "data.eval.max_questions", ">= 1 or null"),
    ("trainer.max_epochs=-1", "trainer.max_epochs", "needs trainer.max_steps > 0"),
]


@pytest.mark.parametrize(("override", "key", "allowed"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_one_clear_line(data_root, override, key, allowed, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = make_cfg(["+experiment=xquad_r", override], data_root)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert "\n" not in msg and err.value.key == key and allowed in msg, msg
    assert msg.startswith(f"config {key}=")


@pytest.mark.parametrize("exp", ["xquad_r", "mlqa_r"])
def test_fast_dev_run_reaches_the_evaluation(exp):
    """The debug run validates within its max_steps (an experiment's 30-step epoch would end after them)."""
    cfg = make_cfg([f"+experiment={exp}", "debug=fast_dev_run"])
    assert cfg.trainer.val_check_interval == cfg.trainer.max_steps == 2
    assert cfg.trainer.get("limit_val_batches", 1.0) == 1.0 and cfg.trainer.get("check_val_every_n_epoch", 1) == 1


def test_adhoc_callback_config_composes_and_is_validated(data_root, tiny_beir):
    cfg = make_cfg(["+experiment=xquad_r", "callbacks=adhoc_eval", f"callbacks.adhoc_eval.root={tiny_beir}"], data_root)
    assert cfg.callbacks.adhoc_eval._target_ == "hybrid_retrieval.tasks.text.evaluators.AdhocEvaluator"
    assert cfg.callbacks.lareqa_eval is not None and cfg.callbacks.model_checkpoint.monitor == "val/multi/map_best"
    validate_config(cfg)
    bad = make_cfg(
        [
            "+experiment=xquad_r",
            "callbacks=adhoc_eval",
            f"callbacks.adhoc_eval.root={tiny_beir}",
            "callbacks.adhoc_eval.split=test",
        ],
        data_root,
    )
    with pytest.raises(ConfigError, match=r"callbacks.adhoc_eval.split='test': no qrels/test.tsv in .* \(has \['dev'\]\)"):
        validate_config(bad)


@pytest.mark.parametrize(
    ("experiment", "sweep", "batch", "lr"),
    [
        ("mlqa_r", "study_mlqa_r", 16, 1e-4 * 0.5**0.5),
        ("mlqa_r", "study_mlqa_r", 64, 1e-4 * 2**0.5),
        ("mlqa_r", "study_mlqa_r", 256, 1e-4 * 2**0.5),  # held from 64 on (the learning-rate check)
        ("mlqa_r", "study_mlqa_r", 1024, 1e-4 * 2**0.5),
        ("xquad_r", "study_xquad_r", 256, 1e-4 * 2**0.5),
    ],
)
def test_study_lr_rule_is_sqrt_capped_at_64(experiment, sweep, batch, lr):
    cfg = make_cfg([f"+experiment={experiment}", f"+sweep={sweep}", f"data.batch_size={batch}"])
    assert cfg.model.optimizer.lr == pytest.approx(lr, rel=1e-12)
    assert cfg.model.grad_cache.chunk_size is None
    assert cfg.data.sampler.batches_per_epoch == 64  # equal updates at every batch size


def test_the_control_rate_probe_runs_at_a_quarter_of_the_control_rate():
    """scripts/run_batch_size_study.sh's control_rate stage: B=256 for 256 steps at the control's rate / 4."""
    control = ["+experiment=mlqa_r", "+sweep=study_mlqa_r", "data.batch_size=256", "budget.steps=256"]
    probe = make_cfg([*control, "data.sampler.alpha=0.5", "budget.base_lr=2.5e-5"])
    assert probe.model.optimizer.lr == pytest.approx(make_cfg(control).model.optimizer.lr / 4, rel=1e-12)
    assert probe.data.sampler.batches_per_epoch == 256 and probe.data.batch_size == 256


def test_ft_dev_sweep_validates_on_the_dev_split_of_its_training_data():
    """The learning-rate selection never scores the evaluation benchmark: dev split of XQuAD-R, full fine-tuning."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=mlqa_r", "+sweep=study_ft_dev"], return_hydra_config=True)
    assert cfg.data.validate_on == "dev" and cfg.data.dev.fraction == 0.1 and cfg.data.train.name == "xquad-r"
    assert cfg.model.encoder.train_layers is None and cfg.model.encoder.prefix_cache is False
    assert cfg.model.encoder.freeze_embeddings is True
    params = cfg.hydra.sweeper.params
    assert params["model.optimizer.lr"] == "1e-5,3e-5,1e-4,3e-4" and params["data.batch_size"] == "16,64,256"
    assert str(cfg.results_dir).endswith("docs/results/full_ft_study/dev")


def test_ft_grid_sweep_trains_on_the_same_split_at_a_rate_it_is_given():
    """The full fine-tuning grid: the dev split's training part, full MLQA-R scored, no rate unless passed in."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=mlqa_r", "+sweep=study_ft"], return_hydra_config=True)
        given = compose("train", overrides=["+experiment=mlqa_r", "+sweep=study_ft", "budget.dev_lr=3e-5"])
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        compose_dev = compose("train", overrides=["+experiment=mlqa_r", "+sweep=study_ft_dev"])
    assert cfg.data.validate_on == "eval" and cfg.data.eval.max_questions is None
    assert cfg.data.dev == compose_dev.data.dev and cfg.data.dev.fraction == 0.1
    assert cfg.data.sampler.min_pool == compose_dev.data.sampler.min_pool == 256
    assert cfg.model.encoder.train_layers is None and cfg.model.encoder.prefix_cache is False
    params = cfg.hydra.sweeper.params
    assert "model.optimizer.lr" not in params and params["data.sampler.alpha"] == "0,0.5,1"
    assert params["seed"] == "0,1,2" and params["data.batch_size"] == "16,64,256"
    with pytest.raises(omegaconf.errors.InterpolationToMissingValueError, match=r"budget\.dev_lr"):
        _ = cfg.model.optimizer.lr
    assert given.model.optimizer.lr == 3e-5
    assert str(cfg.results_dir).endswith("docs/results/full_ft_study/jobs")


def _resolved(overrides: list[str]) -> dict:
    """A composed training config, resolved, without the keys that say where a job writes (not what it computes)."""
    cfg = make_cfg(overrides)
    with open_dict(cfg):
        for key in ("task_name", "results_dir", "callbacks", "logger", "hydra"):
            cfg.pop(key, None)
        cfg.paths.output_dir = "/out"  # a job's run directory (set by Hydra at run time): where, not what
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize(("batch", "steps", "every"), [(16, 1024, 128), (64, 256, 32), (256, 64, 16)])
def test_equal_data_arms_see_16384_pairs_at_their_own_rate(batch, steps, every):
    """The equal-data study: steps = 16,384 pairs / batch, the rate passed in, 8 resume points a job."""
    common = ["+experiment=mlqa_r", f"data.batch_size={batch}"]
    for rate in ("+sweep=study_eq budget.dev_lr=3e-5", "+sweep=study_eq_dev model.optimizer.lr=3e-5"):
        cfg = make_cfg([*common, *rate.split()])
        assert cfg.data.sampler.batches_per_epoch == steps and steps * batch == 16384
        assert cfg.callbacks.resume_checkpoint.every_n_train_steps == every
        assert cfg.model.optimizer.lr == 3e-5 and cfg.model.encoder.train_layers is None
        assert cfg.data.sampler.min_pool == 256  # the same 11 languages and 110 pairs at every arm
        assert str(cfg.results_dir).endswith("equal_data_study/" + ("dev" if "eq_dev" in rate else "jobs"))
        assert cfg.data.validate_on == ("dev" if "eq_dev" in rate else "eval")


def test_the_equal_data_b256_arm_is_the_full_ft_grid_cell():
    """B=256 x 64 in the equal-data study composes to exactly the grid's job: seeds 3 and 4 extend that cell."""
    common = ["+experiment=mlqa_r", "data.batch_size=256", "data.sampler.alpha=0.5", "budget.dev_lr=1e-4", "seed=3"]
    eq, grid = _resolved([*common, "+sweep=study_eq"]), _resolved([*common, "+sweep=study_ft"])
    eq["budget"].pop("pairs")
    assert eq == grid
    # and the B=16 arm differs from the grid's B=16 cell in the steps (and so the pairs) only
    common16 = [c.replace("256", "16") for c in common]
    eq16, grid16 = _resolved([*common16, "+sweep=study_eq"]), _resolved([*common16, "+sweep=study_ft"])
    assert eq16["data"]["sampler"].pop("batches_per_epoch") == 1024 and grid16["data"]["sampler"].pop("batches_per_epoch") == 64
    assert eq16["budget"].pop("steps") == 1024 and grid16["budget"].pop("steps") == 64
    eq16["budget"].pop("pairs")
    assert eq16 == grid16


def test_eq_dev_sweep_tries_three_rates_at_alpha_half():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=mlqa_r", "+sweep=study_eq_dev"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["model.optimizer.lr"] == "3e-5,1e-4,3e-4" and str(params["data.sampler.alpha"]) == "0.5"
    assert cfg.data.train.name == "xquad-r" and cfg.data.dev.fraction == 0.1 and cfg.data.dev.seed == 0
