"""Command line of the cockpit: `cockpit demo|ingest|kpi|audit|link|targets|run|serve`.

Each subcommand is a thin wrapper over one library function, so anything the
command line does can also be scripted from Python or a notebook.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path

import duckdb

from cockpit.errors import CockpitError

logger = logging.getLogger(__name__)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r}; use YYYY-MM-DD"
        ) from exc


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _write_frame(frame, fmt: str) -> None:
    out = sys.stdout
    if fmt == "csv":
        frame.to_csv(out, index=False)
    elif fmt == "json":
        out.write(frame.to_json(orient="records", date_format="iso", indent=2))
        out.write("\n")
    else:
        out.write(frame.to_string(index=False))
        out.write("\n")


def _cmd_demo(args: argparse.Namespace) -> int:
    from cockpit.demo import build_demo

    reports = build_demo(args.mart, scale=args.scale, seed=args.seed)
    totals: dict[str, list[int]] = {}
    for report in reports:
        counts = totals.setdefault(report.table, [0, 0, 0])
        counts[0] += report.rows_read
        counts[1] += report.rows_loaded
        counts[2] += report.rows_quarantined
    for table, (read, loaded, quarantined) in totals.items():
        sys.stdout.write(
            f"{table}: read {read}, loaded {loaded}, quarantined {quarantined}\n"
        )
    sys.stdout.write(f"demo mart written to {args.mart}\n")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from cockpit.ingest import ingest_source

    reports = ingest_source(args.source, args.path, args.mart)
    for report in reports:
        sys.stdout.write(f"{report}\n")
    unbalanced = [r for r in reports if not r.balanced]
    return 1 if unbalanced else 0


#: KPIs that divide by or show a target, which exists per period only.
TARGET_KPIS = ("target", "attainment_pct")


def _cmd_kpi(args: argparse.Namespace) -> int:
    from cockpit.errors import KpiError
    from cockpit.kpi import compute_kpi
    from cockpit.mart import connect
    from cockpit.scope import Scope, check_scope

    scope = Scope(
        region=args.region, business_unit=args.unit, team=args.team, rep_id=args.rep
    )
    if args.period:
        period = {"period": args.period}
    else:
        period = {"start": args.start, "end": args.end}
    if args.kpi in TARGET_KPIS and not (args.period or (args.start and args.end)):
        raise KpiError(
            f"{args.kpi} compares revenue with the target of one period; give --period "
            "(e.g. year) or both --start and --end"
        )
    with connect(args.mart, read_only=True) as con:
        check_scope(con, scope)
        as_of = args.as_of
        if args.period and as_of is None:
            from cockpit.review import parse_as_of

            as_of = parse_as_of(None, con)
        frame = compute_kpi(
            con, args.kpi, by=args.by or [], scope=scope, as_of=as_of, **period
        )
    _write_frame(frame, args.format)
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from cockpit.audit import run_audit

    result = run_audit(args.mart)
    _write_frame(result.summary, args.format)
    if args.save:
        from cockpit.audit import save_audit
        from cockpit.mart import connect

        with connect(args.mart) as con:
            rows = save_audit(con, result, args.save)
        sys.stderr.write(f"saved {rows} audit row(s) under run {args.save}\n")
    return 0


def _cmd_link(args: argparse.Namespace) -> int:
    from cockpit.linking import link_mart
    from cockpit.mart import connect

    with connect(args.mart) as con:
        result = link_mart(con, args.review_dir)
    sys.stdout.write(f"{result}\n")
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    from cockpit import target_log
    from cockpit.mart import connect

    with connect(args.mart) as con:
        if args.action == "plan":
            from cockpit.planning import plan_and_publish
            from cockpit.review import parse_as_of

            as_of = parse_as_of(args.as_of, con)
            version, notes = plan_and_publish(
                con,
                args.year,
                as_of,
                set_by=args.by,
                reason=args.reason,
                ambition_pct=args.ambition,
                forecast_weight=args.forecast_weight,
            )
            for note in notes:
                sys.stdout.write(f"note: {note}\n")
            sys.stdout.write(f"published targets of {args.year} as version {version}\n")
            _write_frame(target_log.target_summary(con, args.year), "table")
        elif args.action == "propose":
            change_id = target_log.propose_adjustment(
                con,
                args.year,
                args.rep,
                args.unit,
                args.value,
                args.by,
                args.reason,
                effective_from=args.effective_from,
            )
            sys.stdout.write(f"proposed change {change_id}\n")
        elif args.action == "decide":
            events = target_log.decide_adjustment(
                con,
                args.change,
                args.by,
                approve=args.decision == "approve",
                comment=args.reason,
                absorb=args.absorb,
            )
            _write_frame(events, "table")
        else:
            written = []
            if args.xlsx:
                written.append(target_log.export_workbook(con, args.year, args.xlsx))
            if args.csv:
                written.append(
                    target_log.export_compensation_csv(con, args.year, args.csv)
                )
            for path in written:
                sys.stdout.write(f"wrote {path}\n")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from cockpit.batch import run_batch

    result = run_batch(
        mart=args.mart,
        out_dir=args.out,
        params_file=args.params,
        regions=args.regions,
        units=args.units,
        notebooks=args.notebooks,
        workers=args.workers,
        as_of=args.as_of,
        notebooks_dir=args.notebooks_dir,
    )
    sys.stdout.write(f"report index: {result.index_path}\n")
    sys.stdout.write(f"{result.succeeded} run(s) succeeded, {result.failed} failed\n")
    return 1 if result.failed else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from cockpit.serve import serve_dashboards

    return serve_dashboards(
        mart=args.mart, port=args.port, access_file=args.access, open_browser=False
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the `cockpit` command."""
    parser = argparse.ArgumentParser(
        prog="cockpit", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at DEBUG level"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build the built-in demo company's mart")
    demo.add_argument("--mart", type=Path, required=True, help="DuckDB file to create")
    demo.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size factor; 1 gives about 150,000 invoice lines",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=7,
        help="random seed; the same seed gives the same mart",
    )
    demo.set_defaults(handler=_cmd_demo)

    ingest = sub.add_parser("ingest", help="load an export into the mart")
    ingest.add_argument("source", help="source name: superstore, maven-crm or macro")
    ingest.add_argument("path", type=Path, help="export file or folder")
    ingest.add_argument(
        "--mart", type=Path, required=True, help="DuckDB file to load into"
    )
    ingest.set_defaults(handler=_cmd_ingest)

    kpi = sub.add_parser("kpi", help="print KPI values")
    kpi.add_argument("kpi", help="KPI name, e.g. revenue, win_rate, open_pipeline")
    kpi.add_argument("--mart", type=Path, required=True)
    kpi.add_argument(
        "--by", type=_csv_list, help="comma-separated grain, e.g. region,business_unit"
    )
    kpi.add_argument("--region")
    kpi.add_argument("--unit", help="business unit")
    kpi.add_argument("--team")
    kpi.add_argument("--rep", help="rep_id of one seller")
    kpi.add_argument("--start", type=_date, help="first day of the period (YYYY-MM-DD)")
    kpi.add_argument("--end", type=_date, help="last day of the period (YYYY-MM-DD)")
    kpi.add_argument(
        "--period",
        choices=["week", "month", "quarter", "year", "ytd", "r12m"],
        help="period around the as-of date, instead of --start and --end",
    )
    kpi.add_argument(
        "--as-of", type=_date, help="date of the pipeline snapshot (YYYY-MM-DD)"
    )
    kpi.add_argument("--format", choices=["table", "csv", "json"], default="table")
    kpi.set_defaults(handler=_cmd_kpi)

    audit = sub.add_parser("audit", help="print the data-quality audit of a mart")
    audit.add_argument("--mart", type=Path, required=True)
    audit.add_argument("--format", choices=["table", "csv", "json"], default="table")
    audit.add_argument(
        "--save",
        metavar="RUN_ID",
        help="also keep the audit in the mart under this run id",
    )
    audit.set_defaults(handler=_cmd_audit)

    link = sub.add_parser("link", help="match ERP and CRM accounts and products")
    link.add_argument("--mart", type=Path, required=True)
    link.add_argument(
        "--review-dir",
        type=Path,
        help="folder of the match review files (default: parameters/review)",
    )
    link.set_defaults(handler=_cmd_link)

    targets = sub.add_parser("targets", help="plan, adjust and export revenue targets")
    targets.add_argument("action", choices=["plan", "propose", "decide", "export"])
    targets.add_argument("--mart", type=Path, required=True)
    targets.add_argument("--year", type=int, help="calendar year of the targets")
    targets.add_argument(
        "--as-of", type=_date, help="as-of date of the forecast (default: the mart's)"
    )
    targets.add_argument(
        "--ambition",
        type=float,
        default=0.05,
        help="growth on top of the forecast, 0.05 = 5 %%",
    )
    targets.add_argument(
        "--forecast-weight",
        type=float,
        default=0.8,
        help="weight of forecast share against headroom share, 0-1",
    )
    targets.add_argument(
        "--by", default="hub", help="person who plans, proposes or decides"
    )
    targets.add_argument("--reason", default="", help="why: kept in the change log")
    targets.add_argument("--rep", help="rep_id of the seller (propose)")
    targets.add_argument("--unit", help="business unit (propose)")
    targets.add_argument("--value", type=float, help="requested year target (propose)")
    targets.add_argument(
        "--effective-from", type=_date, help="first day the change applies (propose)"
    )
    targets.add_argument("--change", help="change id returned by propose (decide)")
    targets.add_argument(
        "--decision", choices=["approve", "reject"], help="decide: approve or reject"
    )
    targets.add_argument(
        "--absorb",
        choices=["none", "team"],
        default="none",
        help="who absorbs an approved change",
    )
    targets.add_argument(
        "--xlsx",
        type=Path,
        help="Excel workbook to write, one sheet per region (export)",
    )
    targets.add_argument(
        "--csv", type=Path, help="CSV for the compensation system (export)"
    )
    targets.set_defaults(handler=_cmd_targets)

    run = sub.add_parser(
        "run", help="batch-run the notebooks for every region x business unit"
    )
    run.add_argument("--mart", type=Path, required=True)
    run.add_argument(
        "--out", type=Path, required=True, help="folder that receives the run"
    )
    run.add_argument(
        "--params", type=Path, help="parameter YAML (default: parameters/run.yaml)"
    )
    run.add_argument(
        "--regions", type=_csv_list, help="comma-separated regions (default: all)"
    )
    run.add_argument(
        "--units", type=_csv_list, help="comma-separated business units (default: all)"
    )
    run.add_argument(
        "--notebooks",
        type=_csv_list,
        help="comma-separated notebook names (default: all)",
    )
    run.add_argument(
        "--workers", type=int, default=2, help="notebooks executed at the same time"
    )
    run.add_argument(
        "--as-of", type=_date, help="as-of date for every run (default: from the mart)"
    )
    run.add_argument(
        "--notebooks-dir",
        type=Path,
        help="folder of the notebooks to run (default: notebooks/)",
    )
    run.set_defaults(handler=_cmd_run)

    serve = sub.add_parser("serve", help="serve the Voilà dashboards")
    serve.add_argument("--mart", type=Path, required=True)
    serve.add_argument("--port", type=int, default=8866)
    serve.add_argument("--access", type=Path, help="viewer-to-scope mapping YAML")
    serve.set_defaults(handler=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `cockpit` command; return its exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except CockpitError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`); exit quietly.
        sys.stderr.close()
        return 0
    except (OSError, duckdb.Error) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
