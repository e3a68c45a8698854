"""The `psyserve` command line: serve, export (trials as CSV/JSONL), replay (offline summary) and plot.

Parses arguments and calls the app or psyserve.export; holds no server logic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import IO

from psyserve_client.plot import PlotError  # matplotlib itself is imported only to draw

from .app import ServerOptions, serve
from .auth import TOKEN_ENV, AuthConfigError, check_token, read_token_file
from .errors import ServiceError
from .service import Limits


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        default=os.environ.get("PSYSERVE_LOG_LEVEL"),
        help="logging level (default INFO for serve, WARNING otherwise)",
    )
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or as one JSON object each (json also logs one line per RPC: method, strategy, trial, status, duration)",
    )
    parser = argparse.ArgumentParser(prog="psyserve", description="Adaptive-experiment gRPC server")
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the server", parents=[common])
    p_serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    p_serve.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051; 0 picks a free one)")
    p_serve.add_argument("--db", default="psyserve.db", help="SQLite journal file (default ./psyserve.db)")
    p_serve.add_argument("--workers", type=int, default=None, help="model-fitting processes (default: CPU cores)")
    p_serve.add_argument(
        "--compute",
        default=None,
        metavar="dask://HOST:PORT",
        help="run model computations on this Dask scheduler's workers instead of a local process pool",
    )
    p_serve.add_argument("--dask-tls-ca", default=None, metavar="PEM", help="CA certificate for a tls:// Dask scheduler")
    p_serve.add_argument("--dask-tls-cert", default=None, metavar="PEM", help="this server's client certificate for the Dask scheduler")
    p_serve.add_argument("--dask-tls-key", default=None, metavar="PEM", help="private key of --dask-tls-cert")
    p_serve.add_argument("--no-models", action="store_true", help="do not start the model-fitting pool")
    p_serve.add_argument("--aepsych-port", type=int, default=None, help="also serve AEPsych's JSON/TCP protocol on this port")
    auth = p_serve.add_mutually_exclusive_group()
    auth.add_argument(
        "--auth-token",
        default=None,
        help=f"require 'authorization: Bearer TOKEN' metadata on every RPC but health and reflection "
        f"(visible in the process list: prefer --auth-token-file or ${TOKEN_ENV})",
    )
    auth.add_argument("--auth-token-file", default=None, help="read the auth token from this file")
    p_serve.add_argument(
        "--tls-cert", default=None, metavar="PEM", help="serve TLS with this certificate chain (needs --tls-key)"
    )
    p_serve.add_argument("--tls-key", default=None, metavar="PEM", help="private key of --tls-cert")
    p_serve.add_argument(
        "--dashboard", action="store_true", help="serve the read-only web dashboard and Prometheus /metrics (same token as the API)"
    )
    p_serve.add_argument(
        "--dashboard-port",
        type=int,
        default=None,
        help="dashboard port (default 8081; with --http-port the dashboard is on the HTTP port unless this is given; 0 picks a free one)",
    )
    p_serve.add_argument("--dashboard-host", default=None, help="address the dashboard binds (default: --host, loopback)")
    p_serve.add_argument("--request-log", action="store_true", help="log one line per RPC (always on with --log-format json)")
    p_serve.add_argument(
        "--resident-strategies",
        type=int,
        default=1000,
        metavar="N",
        help="strategies held in memory at most (default 1000); the least recently used others stay in the journal "
        "and are rebuilt from it on their next request",
    )
    p_serve.add_argument(
        "--evict-idle-seconds",
        type=float,
        default=300.0,
        metavar="S",
        help="a strategy unused for S seconds leaves memory (default 300); its trials stay in the journal",
    )

    p_plot = sub.add_parser("plot", help="draw a strategy's plot from a journal file (PNG or SVG)", parents=[common])
    p_plot.add_argument("--db", default="psyserve.db", help="journal file to read (a live server's is fine)")
    p_plot.add_argument("--strategy", required=True, metavar="ID", help="strategy id or name")
    p_plot.add_argument("--output", "-o", required=True, metavar="FILE", help="image file to write: .png or .svg")
    p_plot.add_argument(
        "--kind",
        default="auto",
        choices=("auto", "field", "slice", "history", "best", "utility", "sweep"),
        help="field: P(yes) over --x/--y with the target contour and trials; slice: 1-D curves with 95%% band; "
        "history: parameters and responses per trial; best: best so far; utility: pairwise; sweep: a metric over --x (--y names it) (default auto)",
    )
    p_plot.add_argument("--x", default=None, metavar="PARAM", help="parameter on the x axis")
    p_plot.add_argument("--y", default=None, metavar="PARAM", help="parameter on the y axis (field)")
    p_plot.add_argument(
        "--fixed", action="append", default=[], metavar="PARAM=VALUE", help="hold a parameter at a value (default: its midpoint); repeatable"
    )
    p_plot.add_argument("--width", type=float, default=8.0, help="inches (100 pixels each), default 8")
    p_plot.add_argument("--height", type=float, default=6.0, help="inches (100 pixels each), default 6")
    p_serve.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="also serve the API over HTTP/1.1: Connect (JSON or binary protobuf) and gRPC-Web, same token and TLS",
    )
    p_serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let browser pages from this origin (scheme://host:port) call the HTTP port; repeatable; none by default",
    )

    p_export = sub.add_parser("export", help="write one row per trial (CSV or JSON lines)", parents=[common])
    p_export.add_argument("--db", default="psyserve.db", help="journal file to read (a live server's is fine)")
    p_export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p_export.add_argument("--strategy", default=None, metavar="ID", help="only this strategy (id or name)")
    p_export.add_argument("--output", "-o", default=None, metavar="FILE", help="write here instead of standard output")

    p_replay = sub.add_parser("replay", help="rebuild a strategy offline, refit its model, print a summary", parents=[common])
    p_replay.add_argument("--db", default="psyserve.db", help="journal file to read (a live server's is fine)")
    p_replay.add_argument("--strategy", required=True, metavar="ID", help="strategy id or name")
    p_replay.add_argument("--no-fit", action="store_true", help="skip the model refit (counts only)")
    p_replay.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _auth_token(args: argparse.Namespace) -> str | None:
    """--auth-token, else --auth-token-file, else $PSYSERVE_AUTH_TOKEN, else None."""
    if args.auth_token is not None:
        return check_token(args.auth_token, "--auth-token")
    if args.auth_token_file is not None:
        return read_token_file(args.auth_token_file)
    env = os.environ.get(TOKEN_ENV)
    if env is not None:
        return check_token(env.strip(), f"${TOKEN_ENV}")
    return None


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8", newline="") as out:
        yield out


async def _export(args: argparse.Namespace) -> int:
    from .export import columns, offline_service, resolve_strategy, trial_rows, write_csv, write_jsonl

    async with offline_service(args.db) as service:
        strategy_id = resolve_strategy(service, args.strategy) if args.strategy else None
        rows = trial_rows(service, strategy_id)
        with _output(args.output) as out:
            count = write_csv(rows, columns(service, strategy_id), out) if args.format == "csv" else write_jsonl(rows, out)
    if args.output is not None:
        print(f"exported {count} trials to {args.output}", file=sys.stderr)
    return 0


def _fixed_values(items: list[str]) -> dict[str, str]:
    fixed: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise PlotError(f"--fixed {item!r}: expected PARAM=VALUE", "fixed")
        fixed[name.strip()] = value.strip()
    return fixed


async def _plot(args: argparse.Namespace) -> int:
    from psyserve_client.plot import plan

    from .export import offline_service, resolve_strategy
    from .plots import figure_bytes, plot_data, predict

    fmt = os.path.splitext(args.output)[1].lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise PlotError(f"--output {args.output!r}: the file must end in .png or .svg", "output")
    if not (0.5 <= args.width <= 100 and 0.5 <= args.height <= 100):
        raise PlotError("--width/--height: between 0.5 and 100 inches", "width")
    async with offline_service(args.db) as service:
        strategy_id = resolve_strategy(service, args.strategy)
        data = await plot_data(service, strategy_id)
        planned = plan(data, args.kind, args.x, args.y, _fixed_values(args.fixed))
        engine = None
        if planned.needs_model:
            from .modeling import PoolModelEngine

            engine = PoolModelEngine(workers=1, speculate=False)
            await engine.start()
            service.models = engine
        try:
            predictions = await predict(service, strategy_id, planned)
        finally:
            if engine is not None:
                await engine.close()
    body = figure_bytes(data, planned, predictions, fmt, (args.width, args.height))
    with open(args.output, "wb") as out:
        out.write(body)
    print(f"wrote {planned.kind} plot of strategy {strategy_id} to {args.output}", file=sys.stderr)
    return 0


async def _replay(args: argparse.Namespace) -> int:
    from .export import format_summary, offline_service, replay_summary, resolve_strategy

    async with offline_service(args.db) as service:
        strategy_id = resolve_strategy(service, args.strategy)
        strategy = service.get(strategy_id)
        fit = not args.no_fit and any(p.is_model_based for p in strategy.spec.phases) and strategy.can_fit()
        engine = None
        if fit:
            from .modeling import PoolModelEngine

            engine = PoolModelEngine(workers=1, speculate=False)
            await engine.start()
            service.models = engine
        try:
            summary = await replay_summary(service, strategy_id, fit=not args.no_fit)
        finally:
            if engine is not None:
                await engine.close()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    level = args.log_level or ("INFO" if args.command == "serve" else "WARNING")
    if args.log_format == "json":
        from .observability import configure_logging

        configure_logging(level, "json")
    else:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            options = ServerOptions(
                host=args.host,
                port=args.port,
                db=args.db,
                workers=args.workers,
                models=not args.no_models,
                aepsych_port=args.aepsych_port,
                compute=args.compute,
                dask_tls=(args.dask_tls_ca, args.dask_tls_cert, args.dask_tls_key) if args.dask_tls_ca else None,
                auth_token=_auth_token(args),
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                dashboard=args.dashboard,
                dashboard_host=args.dashboard_host,
                dashboard_port=args.dashboard_port,
                request_log=args.request_log,
                log_format=args.log_format,
                http_port=args.http_port,
                cors_origins=tuple(args.cors_origin),
                limits=Limits(max_resident_strategies=args.resident_strategies, evict_idle_seconds=args.evict_idle_seconds),
            )
            if args.resident_strategies < 1:
                parser.error(f"--resident-strategies: at least 1 strategy must stay in memory, got {args.resident_strategies}")
            if not 0 < args.evict_idle_seconds < float("inf"):
                parser.error(f"--evict-idle-seconds: must be a positive number of seconds, got {args.evict_idle_seconds}")
            options.check_security()
            if args.compute:
                from .dask_pool import scheduler_address

                try:
                    scheduler_address(args.compute)
                except ValueError as exc:
                    parser.error(str(exc))
            try:
                asyncio.run(serve(options))
            except KeyboardInterrupt:
                pass
            return 0
        if args.command == "export":
            return asyncio.run(_export(args))
        if args.command == "replay":
            return asyncio.run(_replay(args))
        if args.command == "plot":
            return asyncio.run(_plot(args))
    except AuthConfigError as exc:
        parser.error(str(exc))
    except FileNotFoundError as exc:
        print(f"psyserve {args.command}: {exc}", file=sys.stderr)
        return 1
    except ServiceError as exc:
        print(f"psyserve {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except PlotError as exc:
        print(f"psyserve {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `psyserve export | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
