"""SIGINT / SIGTERM during training: finish the step, snapshot, exit 130 / 143.

A job scheduler sends SIGTERM some seconds before its SIGKILL; Ctrl-C sends SIGINT. Neither
kills the run at once: `StopSignal` only raises a flag, which the loop reads at its next
optimizer step (dgunet/engine/trainer.py), so that step is taken, a snapshot of it written,
and the process exits as a shell reports a killed job (128 + signal number).
"""

from __future__ import annotations

import os
import signal
import sys
import threading


class StopSignal:
    """SIGINT/SIGTERM set a flag instead of killing: the loop finishes its optimizer step, writes a
    snapshot and exits (130 / 143).

    The first signal restores the previous handlers, so a second signal kills at once (Ctrl-C
    twice). It also starts a `grace_seconds` timer: when the step and the snapshot have not
    finished by then, the process logs what is kept on disk (`kept`, kept current by the loop)
    and exits with 128 + signal, before a scheduler's SIGKILL would.
    """

    def __init__(self, grace_seconds: float = 0.0, log=None) -> None:
        self.signum: int | None = None
        self.grace_seconds = grace_seconds
        self.kept = "nothing yet"
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._old: dict[int, object] = {}
        self._timer: threading.Timer | None = None

    def __enter__(self) -> StopSignal:
        # Python delivers signals to the main thread only; a training run in another thread
        # (a notebook's worker) keeps the default handlers.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        self.signum = signum
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        if self.grace_seconds > 0:
            self._timer = threading.Timer(self.grace_seconds, self._expire)
            self._timer.daemon = True  # it must never keep a finished process alive
            self._timer.start()

    def _expire(self) -> None:
        self._log(f"signal {self.signum}: the current step and its snapshot did not finish within the grace "
                  f"period of {self.grace_seconds:g} s (TRAIN.STOP_GRACE_SECONDS); exiting now. Kept on "
                  f"disk: {self.kept}. Continue with --resume.")
        os._exit(128 + (self.signum or signal.SIGTERM))  # a thread cannot raise into the main one

    def __exit__(self, *_exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_signal(self) -> int:
        """The signal that stopped the run; SIGTERM when another rank was the one signalled."""
        return self.signum or signal.SIGTERM
