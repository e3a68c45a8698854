"""The `psyserve` command line: serve (and, later, export/replay).

Parses arguments and calls the app; holds no server logic.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .app import ServerOptions, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="psyserve", description="Adaptive-experiment gRPC server")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    p_serve.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051; 0 picks a free one)")
    p_serve.add_argument("--db", default="psyserve.db", help="SQLite journal file (default ./psyserve.db)")
    p_serve.add_argument("--workers", type=int, default=None, help="model-fitting processes (default: CPU cores)")
    p_serve.add_argument("--no-models", action="store_true", help="do not start the model-fitting pool")
    p_serve.add_argument("--aepsych-port", type=int, default=None, help="also serve AEPsych's JSON/TCP protocol on this port")
    p_serve.add_argument("--log-level", default=os.environ.get("PSYSERVE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        options = ServerOptions(
            host=args.host,
            port=args.port,
            db=args.db,
            workers=args.workers,
            models=not args.no_models,
            aepsych_port=args.aepsych_port,
        )
        try:
            asyncio.run(serve(options))
        except KeyboardInterrupt:
            pass
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
