"""Aggregate sweeps and studies: tidy CSVs, statistics, plots and markdown reports (``python -m hybrid_retrieval.report``).

Modules, bottom up: :mod:`.collect` (run directories / job records → tables), :mod:`.stats` (intervals, pooled
and per-comparison noise, multiplicity control), :mod:`.plots` (figures), :mod:`.tables` (table cells), :mod:`.markdown` (reports), :mod:`.cli`.
"""

from hybrid_retrieval.report.cli import main
from hybrid_retrieval.report.collect import METRICS, PAIR_METRICS, collect, collect_records
from hybrid_retrieval.report.markdown import effects, main_grid, study_report, write_markdown
from hybrid_retrieval.report.plots import PANELS, RECALL_PANELS, plot_curves, plot_pair_deltas
from hybrid_retrieval.report.stats import one_job_band, pooled_seed_noise, summarise, t_quantile_975
from hybrid_retrieval.report.tables import STRATEGIES, TABLE_METRICS, _excluded_summary, strategy_table

__all__ = [
    "METRICS",
    "PAIR_METRICS",
    "PANELS",
    "RECALL_PANELS",
    "STRATEGIES",
    "TABLE_METRICS",
    "_excluded_summary",
    "collect",
    "collect_records",
    "effects",
    "main",
    "main_grid",
    "one_job_band",
    "plot_curves",
    "plot_pair_deltas",
    "pooled_seed_noise",
    "strategy_table",
    "study_report",
    "summarise",
    "t_quantile_975",
    "write_markdown",
]
