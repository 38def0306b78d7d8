"""Stopping a long run cleanly: SIGTERM (a cluster's pre-emption, `kill`) and Ctrl-C ask the training loop
to stop after the step it is running, so it can write a checkpoint and say how to resume.

    with StopSignals() as stop:
        for x, y in batches:
            trainer.train_step(x, y)
            if stop.requested:      # "SIGTERM" or "SIGINT"
                save(); raise RunStopped(...)

A second Ctrl-C does not wait: it raises KeyboardInterrupt at once (checkpoints are written atomically,
so stopping in the middle of one leaves the previous one intact). Handlers can only be installed in the
main thread; elsewhere `StopSignals` does nothing and signals keep their usual effect.
"""

import signal
import threading

EXIT_CODES = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}  # 143 and 130, as a shell reports


class RunStopped(Exception):
    """Training stopped on a signal after finishing a step. signal_name: "SIGTERM" or "SIGINT"; where: the
    point it stopped at ('at epoch 2, batch 37'); checkpoint_dir: where the checkpoint was saved (None if
    no checkpoint directory was set); exit_code: 143 (SIGTERM) or 130 (SIGINT)."""

    def __init__(self, signal_name, where, checkpoint_dir=None):
        self.signal_name, self.where, self.checkpoint_dir = signal_name, where, checkpoint_dir
        self.exit_code = EXIT_CODES[signal_name]
        saved = (
            f"; checkpoint saved in {checkpoint_dir}"
            if checkpoint_dir
            else "; nothing was saved (no checkpoint directory)"
        )
        super().__init__(f"stopped by {signal_name} {where}{saved}")


class Terminated(BaseException):
    """Raised in the main thread by `raise_on_sigterm`: SIGTERM, handled like Ctrl-C's KeyboardInterrupt
    (every `finally` runs: worker processes are stopped, shared memory unlinked)."""


class StopSignals:
    """Context manager: while active, SIGTERM and a first SIGINT set `requested` to the signal's name."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.requested = self.requested or name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class raise_on_sigterm:
    """Context manager for runs that cannot stop at a step of their own (the parallel engines' parents):
    SIGTERM raises `Terminated` in the main thread, and Ctrl-C (SIGINT) raises KeyboardInterrupt, so the
    engine's clean-up runs for either. Ctrl-C's handler is set explicitly because a process inherits an
    ignored SIGINT (a shell starts background jobs so), and Python then installs no handler of its own, so
    the run would not stop on Ctrl-C (the in-process runs' `StopSignals` sets its own handler too)."""

    def __enter__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = (
                signal.signal(signal.SIGTERM, self._handle),
                signal.signal(signal.SIGINT, signal.default_int_handler),
            )
        return self

    @staticmethod
    def _handle(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish; SIGKILL still ends it
        raise Terminated()

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous[0])
            signal.signal(signal.SIGINT, self._previous[1])
