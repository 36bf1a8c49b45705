"""Benchmark: the cockpit forecast pipeline against a plain Prophet loop.

Builds the demo mart (default scale 2, about 2,100 accounts), takes one
monthly revenue series per account, holds out the last 12 months and
forecasts them twice in one run:

- pipeline: `cockpit.forecast.forecast_many` with its rules (Prophet with
  yearly order 5 on regular series; SBA, seasonal naive or naive on
  intermittent, short or constant ones) in parallel worker processes;
- baseline: a sequential loop that fits `Prophet()` with its default
  settings to each series and predicts 12 months.

Both see the same series with at least 2 training months. Prints wall
times, their ratio, and the pooled WAPE (sum |actual - forecast| / sum
|actual| over every series and held-out month) of each, as a Markdown
block for docs/benchmarks.md.

Run: .venv/bin/python benchmarks/bench_forecast.py [--scale 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from cockpit.demo import AS_OF, build_demo
from cockpit.forecast import forecast_many, monthly_series
from cockpit.mart import connect

HOLDOUT = 12


def _account_series(mart: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and held-out months of every account with 2+ training months."""
    with connect(mart, read_only=True) as con:
        series = monthly_series(con, by="account_id", end=AS_OF)
    cut = series["ds"].max() - pd.DateOffset(months=HOLDOUT - 1)
    train = series[series["ds"] < cut]
    test = series[series["ds"] >= cut]
    counts = train.groupby("series_id").size()
    keep = counts[counts >= 2].index
    return (
        train[train["series_id"].isin(keep)].reset_index(drop=True),
        test[test["series_id"].isin(keep)].reset_index(drop=True),
    )


def _future_months(train: pd.DataFrame) -> pd.DatetimeIndex:
    last = train["ds"].max()
    return pd.date_range(last + pd.DateOffset(months=1), periods=HOLDOUT, freq="MS")


def _actuals(test: pd.DataFrame, months: pd.DatetimeIndex, ids) -> pd.DataFrame:
    """Held-out revenue per series and month, 0 where an account bought nothing."""
    grid = pd.MultiIndex.from_product([ids, months], names=["series_id", "ds"])
    return (
        test.set_index(["series_id", "ds"])["y"]
        .reindex(grid, fill_value=0.0)
        .reset_index()
    )


def _wape(actual: pd.DataFrame, forecast: pd.DataFrame) -> float:
    merged = actual.merge(forecast, on=["series_id", "ds"], how="left")
    merged["yhat"] = merged["yhat"].fillna(0.0)
    return float((merged["y"] - merged["yhat"]).abs().sum() / merged["y"].abs().sum())


def _plain_prophet_loop(train: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Fit Prophet() per series, one after the other; count failed fits."""
    from prophet import Prophet

    frames = []
    failed = 0
    for series_id, group in train.groupby("series_id", sort=False):
        history = group[["ds", "y"]]
        try:
            model = Prophet()
            model.fit(history)
            future = model.make_future_dataframe(periods=HOLDOUT, freq="MS")
            predicted = model.predict(future).tail(HOLDOUT)
        except (RuntimeError, ValueError):
            failed += 1
            continue
        frames.append(
            pd.DataFrame(
                {
                    "series_id": series_id,
                    "ds": predicted["ds"].to_numpy(),
                    "yhat": predicted["yhat"].to_numpy(float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=2.0, help="demo scale")
    parser.add_argument("--workers", type=int, default=2, help="pipeline processes")
    parser.add_argument("--mart", type=Path, help="existing demo mart to reuse")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from cmdstanpy.utils import get_logger

    get_logger()
    for name in ("cmdstanpy", "prophet"):
        logging.getLogger(name).setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as folder:
        mart = args.mart or Path(folder) / "demo.duckdb"
        if args.mart is None:
            build_demo(mart, scale=args.scale, seed=7)
        train, test = _account_series(mart)
    ids = train["series_id"].unique()
    months = _future_months(train)
    actual = _actuals(test, months, ids)

    started = time.perf_counter()
    pipeline = forecast_many(train, HOLDOUT, workers=args.workers, progress=True)
    pipeline_seconds = time.perf_counter() - started

    started = time.perf_counter()
    plain, failed = _plain_prophet_loop(train)
    plain_seconds = time.perf_counter() - started

    methods = pipeline.drop_duplicates("series_id")["method"].value_counts()
    negative = int((plain["yhat"] < 0).sum())
    plain_clipped = plain.assign(yhat=plain["yhat"].clip(lower=0.0))
    print(f"## Forecast pipeline against a plain Prophet loop ({len(ids)} series)")
    print()
    print(
        f"Demo mart scale {args.scale:g}, seed 7: one monthly net revenue series per "
        f"account, {HOLDOUT} months held out ({months[0]:%Y-%m} to {months[-1]:%Y-%m}). "
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"script benchmarks/bench_forecast.py."
    )
    print()
    print("| run | wall time | pooled WAPE |")
    print("|---|---:|---:|")
    print(
        f"| cockpit pipeline, {args.workers} processes | {pipeline_seconds:,.1f} s | "
        f"{_wape(actual, pipeline):.3f} |"
    )
    print(
        f"| plain `Prophet()` loop, sequential | {plain_seconds:,.1f} s | "
        f"{_wape(actual, plain):.3f} |"
    )
    print(f"| plain loop, negatives set to 0 | | {_wape(actual, plain_clipped):.3f} |")
    print()
    print(
        f"Wall time ratio (plain / pipeline): {plain_seconds / pipeline_seconds:.1f}."
    )
    print(
        "Pipeline methods: "
        + ", ".join(f"{name} {count}" for name, count in methods.items())
        + f". Plain loop: {failed} failed fit(s), {negative} negative monthly forecasts."
    )


if __name__ == "__main__":
    main()
