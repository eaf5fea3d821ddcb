"""How every command ends: one mapping from what went wrong to the exit code and the one paragraph printed.

=====  =====================================================================================================
code   when
=====  =====================================================================================================
0      done (``reproduce.py``: the metrics are identical)
1      the run failed: it diverged, or training or tracking raised (``RunFailed``; the run closed as FAILED)
2      bad input nnlab checks, before anything ran: a config key or value, the store, the data, a run id
       (what Hydra refuses itself while composing, an override it cannot parse, exits 1 with Hydra's message)
130    Ctrl-C; 143: SIGTERM (the run in progress closed as KILLED with its last weights)
=====  =====================================================================================================
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from experiments.outcome import RunFailed, Terminated, interruption
from experiments.runs import RunError
from experiments.schema import ConfigError
from experiments.store import StoreError
from nn.data import DataError

log = logging.getLogger("nnlab")

BAD_INPUT = (ConfigError, StoreError, DataError, RunError)
ERRORS = (*BAD_INPUT, RunFailed)  # what a command's main reports (``report``) and returns the code of
FAILED, USAGE, INTERRUPTED, TERMINATED = 1, 2, 130, 143
ENDINGS = (*ERRORS, KeyboardInterrupt)  # what ends a command in one paragraph


def exit_code(err: BaseException) -> int:
    """The exit code of a command that ``err`` (one of ``ENDINGS``) ended."""
    if isinstance(err, KeyboardInterrupt):
        return TERMINATED if isinstance(err, Terminated) else INTERRUPTED
    return FAILED if isinstance(err, RunFailed) else USAGE


def message(err: BaseException) -> str:
    """The one paragraph a command prints for ``err``."""
    if isinstance(err, KeyboardInterrupt):
        run_id = getattr(err, "run_id", None)  # set by train() for its tracked run
        if run_id:
            return (
                f"{interruption(err)}: MLflow run {run_id} is closed as KILLED with its last weights; "
                f"python experiments/resume.py {run_id} continues it."
            )
        return (
            f"{interruption(err)}: a run still in progress is closed as KILLED with its last weights "
            "(python experiments/resume.py <run id> continues it); rerun a sweep's command to resume the sweep."
        )
    return err.explain() if isinstance(err, RunFailed) else str(err)


def diverged(reason: str, run_id: str | None) -> str:
    """The paragraph for a run that diverged (``train`` returns it; the command exits ``FAILED``)."""
    where = f" MLflow run {run_id} is closed as FAILED with this reason." if run_id else ""
    return f"The run failed: {reason}{where}"


def report(err: BaseException, prog: str | None = None) -> int:
    """Print ``err``'s paragraph on stderr (after ``prog: `` when given); returns its exit code."""
    print(f"{prog}: {message(err)}" if prog else message(err), file=sys.stderr)
    return exit_code(err)


def leave(err: BaseException) -> NoReturn:
    """Log ``err``'s paragraph and exit with its code: how a command under Hydra ends (a failed run's traceback
    is logged at debug level, shown with ``hydra.verbose=nnlab``)."""
    if isinstance(err, RunFailed):
        log.debug("traceback of the failure", exc_info=err.__cause__)
        log.error("%s To see the traceback, run again with hydra.verbose=nnlab.", message(err))
    else:
        log.error("%s", message(err))
    sys.exit(exit_code(err))


def terminate(signum, frame) -> None:
    """The SIGTERM handler of the commands: stop where Ctrl-C would."""
    raise Terminated()


def run_command(main: Callable[[], int | None], prog: str | None = None) -> NoReturn:
    """Run a command's ``main`` with SIGTERM handled as Ctrl-C; one of ``ENDINGS`` ends it in one paragraph
    on stderr (after ``prog: `` when given) and its ``exit_code``."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        code = main()
    except ENDINGS as err:
        sys.exit(report(err, prog))
    sys.exit(code or 0)
