"""The ``pcbsiam`` command: the top-level parser over the command-group modules, and its entry point.

Each module of :data:`COMMAND_GROUPS` adds its sub-commands with ``register(sub)`` and imports torch
and the library only inside its command functions, so that ``pcbsiam --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import time

from pcbsiam import __version__
from pcbsiam.cli import bench, data, deploy, detect, evaluate, experiment, serve, train
from pcbsiam.cli.common import Parser, set_quiet, verbosity_options
from pcbsiam.errors import ConfigError, PcbsiamError

log = logging.getLogger("pcbsiam")

#: The command-group modules, in the order ``pcbsiam --help`` lists their commands.
COMMAND_GROUPS = (data, train, evaluate, detect, experiment, deploy, bench, serve)

#: The ``register(sub)`` functions :func:`build_parser` calls: one per group (tests may add one).
_EXTRA = [group.register for group in COMMAND_GROUPS]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = Parser(
        prog="pcbsiam",
        description="Siamese feature-fusion ResNet for PCB defect inspection",
        parents=[verbosity_options(top=True)],  # every sub-command takes them too (Parser.add_subparsers)
    )
    p.add_argument("--version", action="version", version=f"pcbsiam {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for register in _EXTRA:
        register(sub)
    return p


def log_level(args: argparse.Namespace) -> int:
    """The logging level of ``-v`` (DEBUG), ``-q`` (WARNING) or neither (INFO); a sentence for both."""
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    if verbose and quiet:
        raise ConfigError("-v/--verbose and -q/--quiet contradict each other; give one of them")
    return logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO


def _stdout_closed() -> bool:
    """Whether standard output's reader has gone (poll reports an error on its pipe); if so, later writes and the
    final flush go to /dev/null. False where it cannot tell (no poll, not a file descriptor)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        closed = any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
        if closed:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return closed
    except (AttributeError, OSError, ValueError):
        return False


def run(args: argparse.Namespace) -> int:
    """Set up logging and progress output (``-v``, ``-q``) and run the parsed command: a
    :class:`PcbsiamError` is a one-line error and exit status 2 (as a bad option is, see
    :class:`~pcbsiam.cli.common.Parser`), an interrupt exit status 130."""
    t0 = time.perf_counter()
    was_quiet = set_quiet(getattr(args, "quiet", False))
    try:
        logging.basicConfig(
            level=log_level(args), format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
        return int(args.func(args) or 0)
    except PcbsiamError as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line, always
        print(f"pcbsiam: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pcbsiam: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # another pipe (a loader worker's): not the reader leaving
        return 141  # the reader left (`pcbsiam info deeppcb | head`): stop quietly, as Unix tools do
    finally:
        set_quiet(was_quiet)  # an in-process caller (a test) runs the next command with its own flags
        log.debug("done in %.1f s", time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pcbsiam`` console script."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
