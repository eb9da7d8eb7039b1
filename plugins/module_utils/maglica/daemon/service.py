# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What both worker daemons do around their loop: command line, logging, signals, exit codes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Any, Callable, Dict, Iterable, Optional, Protocol, Sequence, Tuple

from ..cluster import config as config_mod
from ..errors import MaglicaError
from ..protocol import transport

LOG = logging.getLogger('maglica.service')


class Daemon(Protocol):
    """What serve() runs: a worker whose loop ends once `stopping` is set."""

    stopping: bool

    def run(self) -> None:
        """Work until `stopping` is set."""

    def close(self) -> None:
        """Let go of sockets, threads and files."""


# extra_arguments of serve(): (flags, keyword arguments) of argparse's add_argument.
Argument = Tuple[Sequence[str], Dict[str, Any]]


def setup_logging(verbose: bool = False) -> None:
    # The format names none of these: a daemon logs a line per job, and need not find each call's source file, thread
    # and process (the logging HOWTO's "Optimization").
    logging._srcfile = None  # pylint: disable=protected-access
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format='%(asctime)s %(name)s %(levelname)s %(message)s')


def serve(prog: str, description: str, make_worker: Callable[[config_mod.Config, argparse.Namespace], Daemon],
          argv: Optional[Sequence[str]] = None, extra_arguments: Iterable[Argument] = ()) -> int:
    """Parse `--config`/`--verbose` (and extra_arguments [(flags, kwargs)]), build the worker
    with make_worker(config, args), run it until SIGTERM/SIGINT. Returns the exit code: 2 when it cannot start."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument('--config', default=None, help='configuration file (default /etc/maglica.conf)')
    parser.add_argument('--verbose', action='store_true')
    for flags, kwargs in extra_arguments:
        parser.add_argument(*flags, **kwargs)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        worker = make_worker(config_mod.load(args.config), args)
    except MaglicaError as e:
        LOG.error('%s', e)
        return 2
    except transport.zmq().ZMQError as e:
        LOG.error('cannot open the worker sockets: %s', e)
        return 2

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        worker.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    finally:
        worker.close()
    return 0
