"""Aggregate a batch-size sweep: tidy CSV, plots and a markdown report.

    python -m hybrid_retrieval.report logs/xquad_r/multiruns/<time>        # from the job directories
    python -m hybrid_retrieval.report --csv docs/results/sweep.csv --out docs/results   # from a CSV

Each job directory holds ``.hydra/config.yaml`` and either ``final_metrics.json`` (finished),
``FAILED.json`` (failed; kept in the CSV with ``status=failed``) or neither (``status=incomplete``:
still running, or killed). Outputs: ``sweep.csv`` (one row per job), ``pairs.csv`` (one row per job
and language pair: the heatmaps' source), ``summary.csv`` (mean, std, count per α × batch size),
``report.md`` with the effects measured against seed noise, and the figures. ``--baseline`` takes the
``summary.json`` of ``python -m hybrid_retrieval.evaluate`` on the same evaluation pool (the untrained
encoder) and adds it to the table and the curves; it is copied to ``baseline.json`` so that ``--csv``
reproduces everything from the output folder alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from hybrid_retrieval.common.console import ArgumentParser, user_errors
from hybrid_retrieval.common.errors import DataFormatError
from hybrid_retrieval.report.collect import collect, read_json
from hybrid_retrieval.report.markdown import study_report, write_markdown
from hybrid_retrieval.report.plots import plot_curves, plot_pair_deltas
from hybrid_retrieval.report.stats import summarise

REQUIRED_CSV_COLUMNS = ("status", "alpha", "batch_size")


def read_sweep_csv(path: Path) -> pd.DataFrame:
    """A sweep.csv written earlier; a missing file or missing columns is a :class:`DataFormatError` naming them."""
    if not path.is_file():
        raise DataFormatError(path, "file", "an existing sweep CSV (written by an earlier report)")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataFormatError(path, "file", f"a CSV file ({str(err).splitlines()[0]})") from None
    missing = [c for c in REQUIRED_CSV_COLUMNS if c not in df.columns]
    if missing:
        raise DataFormatError(path, "header", f"the columns {', '.join(REQUIRED_CSV_COLUMNS)} (missing: {', '.join(missing)})")
    return df


def main(argv: list[str] | None = None, side_analyses: tuple = ()) -> None:
    """The command line; ``side_analyses`` (for --records) are a study's own sections (see ``study_report``)."""
    ap = _parser()
    args = ap.parse_args(argv)
    with user_errors():
        _run(ap, args, side_analyses)


def _parser() -> ArgumentParser:
    ap = ArgumentParser(prog="hybrid_retrieval.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", nargs="?", help="a multirun directory (logs/<task>/multiruns/<time>)")
    ap.add_argument("--csv", help="re-create the report from a tidy CSV written earlier")
    ap.add_argument("--out", help="output folder (default: the sweep directory)")
    ap.add_argument("--baseline", nargs="+", help="summary.json of `hybrid_retrieval.evaluate` on the same pool (zero-shot row)")
    ap.add_argument("--records", help="a results_dir of job records (*.json): the study report, per direction")
    ap.add_argument(
        "--expect",
        nargs="*",
        default=[],
        help="expected grid per direction, e.g. xquad-r:mlqa-r:16,64,256,1024 (lists missing jobs)",
    )
    ap.add_argument("--side-records", nargs="*", default=[], help="record folders shown as side rows only (with --records)")
    ap.add_argument("--alphas", default="0,0.5,1")
    ap.add_argument("--seeds", default="0,1,2")
    return ap


def _run(ap: ArgumentParser, args: argparse.Namespace, side_analyses: tuple) -> None:
    for given in [*(args.baseline or []), *([args.records] if args.records else []), *args.side_records]:
        if not Path(given).exists():
            raise DataFormatError(given, "path", "an existing file or folder")
    if args.records:
        if not Path(args.records).is_dir():
            raise DataFormatError(args.records, "path", "a folder of job records (*.json)")
        expect = {(t, e): [int(b) for b in bs.split(",")] for t, e, bs in (x.split(":") for x in args.expect)}
        baselines = {}
        for path in args.baseline or []:
            src = read_json(Path(path))
            baselines[src.get("dataset", Path(path).parent.name)] = src.get("macro", src)
        out = Path(args.out or args.records)
        report = study_report(
            Path(args.records),
            out,
            expect,
            alphas=tuple(float(a) for a in args.alphas.split(",")),
            seeds=tuple(int(x) for x in args.seeds.split(",")),
            baselines=baselines,
            side_records=[Path(x) for x in args.side_records],
            side_analyses=side_analyses,
        )
        (out / "baselines.json").write_text(json.dumps(baselines, indent=1))
        print(report.read_text())
        return
    if bool(args.sweep_dir) == bool(args.csv):
        ap.error("give a sweep directory, --csv or --records")
    args.baseline = args.baseline[0] if args.baseline else None
    sweep_dir = Path(args.sweep_dir) if args.sweep_dir else None
    if sweep_dir:
        if not sweep_dir.is_dir():
            raise DataFormatError(sweep_dir, "path", "a multirun directory (logs/<task>/multiruns/<time>)")
        df, pairs = collect(sweep_dir)
    else:
        df = read_sweep_csv(Path(args.csv))
        pairs_csv = Path(args.csv).with_name("pairs.csv")
        pairs = pd.read_csv(pairs_csv) if pairs_csv.exists() else None
    out = Path(args.out) if args.out else (sweep_dir or Path(args.csv).parent)
    out.mkdir(parents=True, exist_ok=True)
    baseline = None
    if args.baseline:
        src = read_json(Path(args.baseline))
        baseline = src.get("macro", src)  # evaluate's summary.json, or a baseline.json written here
        (out / "baseline.json").write_text(json.dumps(baseline, indent=1))
    elif args.csv and Path(args.csv).with_name("baseline.json").exists():
        baseline = read_json(Path(args.csv).with_name("baseline.json"))
        if out.resolve() != Path(args.csv).parent.resolve():
            (out / "baseline.json").write_text(json.dumps(baseline, indent=1))
    if sweep_dir:
        df.to_csv(out / "sweep.csv", index=False)
        pairs.to_csv(out / "pairs.csv", index=False)
    summary = summarise(df)
    summary.to_csv(out / "summary.csv", index=False)
    figures = [plot_curves(summary, out, baseline), *plot_pair_deltas(pairs, out)] if len(summary) else []
    report = write_markdown(df, summary, out, figures, str(sweep_dir or args.csv), baseline)
    print(report.read_text())
    print(f"written: {out / 'summary.csv'}, {report}, " + ", ".join(str(f) for f in figures))
