"""Cancelling a training run: SIGTERM/SIGINT stop it at once and leave no version.

A run is either published (its folder renamed into place, after which a signal no longer
cancels) or cancelled (after which it is never published): `RunState` decides that once, under
a lock. The training itself runs in a worker thread (`run_cancellable`) so the main thread,
where Python delivers signals, reacts within a fraction of a second even while a torch call
holds the worker for many seconds; `CancelCheck` stops the Trainer between (micro-)steps.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

CANCELLED_EXIT_CODE = 128 + signal.SIGTERM
CANCEL_GRACE_SECONDS = 2.0  # time the training thread gets to stop by itself
T = TypeVar("T")


class Cancelled(BaseException):
    """SIGTERM (or SIGINT): stop now, leave no version. A BaseException so no library eats it."""


class RunState:
    """Cancel versus publish for one run, decided once under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.published = False
        self.cancelled: str | None = None
        self.folder: Path | None = None  # the temporary version folder, once this process made it

    def cancel(self, reason: str) -> bool:
        """Mark the run cancelled; False when it is too late (the version is published)."""
        with self.lock:
            if self.published:
                return False
            self.cancelled = reason
            return True

    def check(self) -> None:
        """Raise Cancelled in the training thread once the run has been cancelled."""
        if self.cancelled:
            raise Cancelled(self.cancelled)

    def publish(self, tmp: Path, output: Path) -> None:
        """Rename the complete version into place, unless the run was cancelled first."""
        with self.lock:
            self.check()
            os.replace(tmp, output)  # the version becomes visible only complete
            self.published = True

    def discard(self) -> None:
        """Remove the unfinished version folder (nothing to do once it is published)."""
        if self.folder is not None and not self.published:
            shutil.rmtree(self.folder, ignore_errors=True)


def cancel_check(run: RunState):
    """A Trainer callback that stops training between (micro-)steps once `run` is cancelled."""
    from transformers import TrainerCallback

    class CancelCheck(TrainerCallback):
        def on_substep_end(self, args, state, control, **kwargs):
            run.check()

        def on_step_end(self, args, state, control, **kwargs):
            run.check()

        def on_evaluate(self, args, state, control, **kwargs):
            run.check()

    return CancelCheck()


def install_cancel_handlers(run: RunState) -> None:
    """SIGTERM and SIGINT cancel `run` (raising Cancelled in the main thread)."""

    def cancel(signum, _frame):
        name = signal.Signals(signum).name
        if not run.cancel(name):  # too late to cancel: the version is complete and visible
            log.warning("%s after the version was published; finishing", name)
            return
        raise Cancelled(name)

    signal.signal(signal.SIGTERM, cancel)
    signal.signal(signal.SIGINT, cancel)


def run_cancellable(work: Callable[[], T], run: RunState) -> T:
    """Run `work` in a worker thread so that the main thread answers signals at once.

    Python runs signal handlers in the main thread only between bytecodes; a training step
    on a busy CPU can spend many seconds inside one torch call. Here the main thread waits in
    short joins; on Cancelled it gives the worker a moment to stop, removes the unfinished
    folder itself and re-raises.
    """
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["done"] = work()
        except BaseException as error:
            result["error"] = error

    worker = threading.Thread(target=target, name="training", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except Cancelled:
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        while worker.is_alive() and time.monotonic() < deadline:
            worker.join(0.1)  # the worker stops at its next check and removes its folder
        run.discard()
        raise
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["done"]  # type: ignore[return-value]
