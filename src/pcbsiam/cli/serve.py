"""``pcbsiam serve`` and ``pcbsiam serve-loadtest``: the inspection service and its load test.

:func:`register` adds both sub-commands to the ``pcbsiam`` parser; ``python -m pcbsiam.cli.serve``
runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from pcbsiam.cli.common import (
    Parser,
    bounded,
    detector_engine_option,
    device_option,
    flag_detections_option,
    model_option,
    quiet,
    tiling_options,
)

log = logging.getLogger(__name__)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service with uvicorn until interrupted."""
    import torch
    import uvicorn

    from pcbsiam.serve.app import create_app
    from pcbsiam.serve.service import ServiceSettings, allowed_hosts_for

    # each inspection thread gets its share of the cores: two threads of 2 torch threads on 2 cores thrash
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // args.workers_threads))
    settings = ServiceSettings(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        inspection_timeout_s=args.inspection_timeout,
        allowed_hosts=allowed_hosts_for(args.host, args.allowed_hosts or ()),
        max_concurrency=args.workers_threads,
        max_queue=args.max_queue,
        overlap=args.overlap,
        max_shift=args.max_shift,
        device=args.device,
        store_images=not args.no_store_images,
        detector=args.detector,
        detector_engine=args.detector_engine,
        flag_detections=args.flag_detections,
        engine=args.engine,
    )
    app = create_app(args.model, db_url=args.db, token=args.token or None, settings=settings)
    auth = "bearer token required on /v1/*" if args.token else "no token: the API is open"
    log.info("serving %s on http://%s:%d (%s; records in %s)", args.model, args.host, args.port, auth, args.db)
    log_level = args.log_level or ("warning" if quiet() else "info")
    uvicorn.run(app, host=args.host, port=args.port, log_level=log_level, timeout_graceful_shutdown=30)
    return 0


def cmd_loadtest(args: argparse.Namespace) -> int:
    """Run a bounded load test and print its report as JSON (a summary goes to stderr)."""
    from pcbsiam.serve.loadtest import run_loadtest

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
    report = run_loadtest(
        args.url,
        args.tested,
        args.template,
        args.board,
        clients=args.clients,
        requests=args.requests,
        token=args.token or None,
        timeout=args.timeout,
        max_seconds=args.max_seconds,
        db_url=args.db,
    )
    print(report.summary(), file=sys.stderr)
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.errors == 0 and not report.db_missing else 1


def _token_option() -> argparse.ArgumentParser:
    """``--token`` (default ``$PCBSIAM_TOKEN``) of the service and of its load test."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--token",
        default=os.environ.get("PCBSIAM_TOKEN"),
        help="bearer token (default: $PCBSIAM_TOKEN; prefer the variable, a command line is visible to ps)",
    )
    return p


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``serve-loadtest`` to the ``pcbsiam`` sub-command parser ``sub``."""
    s = sub.add_parser(
        "serve",
        help="run the inspection service (HTTP API, review page at /)",
        parents=[
            model_option("calibrated bundle file"),
            _token_option(),
            tiling_options(),
            device_option("torch device: cpu, cuda, cuda:1 ..."),
        ],
    )
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    s.add_argument("--port", type=bounded(int, 1, 65535), default=8000, help="TCP port, 1-65535")
    s.add_argument("--db", default="sqlite:///inspections.db", help="SQLAlchemy URL of the inspection records")
    s.add_argument("--workers-threads", type=int, default=2, help="inspections run at once")
    s.add_argument("--max-queue", type=int, default=16, help="inspections waiting for a thread before 503")
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body, MiB")
    s.add_argument("--max-pixels", type=int, default=2048 * 2048, help="largest image, pixels (413 beyond)")
    s.add_argument(
        "--inspection-timeout", type=float, default=30.0, help="seconds per inspection, queueing included (503 beyond)"
    )
    s.add_argument(
        "--allowed-hosts",
        nargs="+",
        default=None,
        metavar="HOST",
        help="Host header names served besides the bind address and loopback ('*': any); others get 400",
    )
    s.add_argument(
        "--threads",
        type=bounded(int, 1, 1024),
        default=None,
        help="torch intra-op threads of each inspection thread (default: the cores divided by --workers-threads)",
    )
    # the name before the CLI said --threads everywhere (as inspect and bench do); hidden, still accepted
    s.add_argument(
        "--torch-threads", dest="threads", type=bounded(int, 1, 1024), default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    s.add_argument(
        "--no-store-images",
        action="store_true",
        help="do not keep tested images in the database (no overlay afterwards)",
    )
    s.add_argument(
        "--detector",
        default=None,
        metavar="{classical,PATH}",
        help="also find typed defect boxes in each inspection: 'classical', or a detector file of "
        "`pcbsiam train-detector` (default: none); recorded and drawn, the verdict stays the tiles' unless "
        "--flag-detections",
    )
    detector_engine_option(s)
    flag_detections_option(s)
    s.add_argument(
        "--engine",
        default="torch",
        metavar="{torch,FILE.onnx}",
        help="run the network with PyTorch, or with ONNX Runtime on a graph exported from this bundle by "
        "`pcbsiam export` (fp32 or int8), shared by the worker threads",
    )
    s.add_argument(
        "--log-level",
        default=None,
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level (default: info; warning with -q)",
    )
    s.set_defaults(func=cmd_serve)

    t = sub.add_parser("serve-loadtest", help="bounded load test of a running service", parents=[_token_option()])
    t.add_argument("--url", required=True, help="service base URL, e.g. http://127.0.0.1:8000")
    t.add_argument("--clients", type=int, default=4, help="concurrent clients")
    t.add_argument("--requests", type=int, default=25, help="requests per client")
    t.add_argument("--tested", required=True, help="tested image file")
    ref = t.add_mutually_exclusive_group(required=True)
    ref.add_argument("--template", help="template image file")
    ref.add_argument("--board", help="registered board name")
    t.add_argument("--db", default=None, help="the service's database URL: check every returned id is recorded")
    t.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, s")
    t.add_argument("--max-seconds", type=float, default=600.0, help="no request starts after this, s")
    t.set_defaults(func=cmd_loadtest)


def main(argv: list[str] | None = None) -> int:
    """Run ``serve`` or ``serve-loadtest`` without the rest of the ``pcbsiam`` command."""
    from pcbsiam.cli.main import run

    parser = Parser(prog="python -m pcbsiam.cli.serve")
    register(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
