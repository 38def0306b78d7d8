"""What each worker of a parallel run did, and when: busy/idle time, staleness, replays, buffer occupancy.

Every worker of the module-parallel engines (local and MPI) owns one `WorkerRecorder`. The worker loop
tells it when it started waiting for a batch, when it got one (with what the buffer said about it), and
when it finished computing; the recorder keeps running sums and a bounded *timeline* of busy intervals, and
`summary()` turns them into the JSON-ready dict that lands in the metrics file:

    steps, skips, samples, busy_seconds, idle_seconds, busy_fraction, samples_per_second,
    replayed (steps on a batch that had been served before), staleness_mean / staleness_max,
    occupancy_mean (batches waiting in the input buffer when one was taken), timeline [[start, end], ...]

Staleness of a batch, in a module pipeline: how many more batches the producing worker had pushed into
the buffer between pushing this one and our taking it, i.e. how many updates the module below made since it
computed these activations (0 = the freshest possible; in FIFO it grows with the buffer's backlog, in
replay with reuse). Timeline times are seconds since the run started (`time.time()` of the parent, passed
to every worker; the clocks of processes on one machine agree; across machines they are as good as NTP).

`plot_timeline` draws the timelines of a run's workers as a Gantt chart (one row per worker, a bar per
busy interval): where the pipeline's bubbles are is easier to see than to read.
"""
from __future__ import annotations

import math
import time

MAX_INTERVALS = 2000  # timeline bars kept per worker; beyond it neighbouring bars are merged


class WorkerRecorder:
    """Running metrics of one worker. Times come from `time.time()` (seconds, shared across processes)."""

    def __init__(self, index, run_started, input_is_data=False, max_intervals=MAX_INTERVALS):
        # input_is_data: the worker reads the data set (its "staleness" would only be the loader's backlog)
        self.index, self.run_started, self.max_intervals = index, float(run_started), int(max_intervals)
        self.input_is_data = bool(input_is_data)
        self.steps = self.skips = self.samples = self.replayed = 0
        self.busy = self.idle = 0.0
        self.staleness_sum = self.staleness_max = 0
        self.occupancy_sum = 0
        self.gets = 0
        self.intervals = []  # [start, end] of busy periods, seconds since run_started
        self.first_time = self.last_time = None

    def now(self):
        t = time.time()
        if self.first_time is None:
            self.first_time = t
        self.last_time = t
        return t

    def waited(self, seconds):
        self.idle += seconds

    def skipped(self, seconds):
        """A replay buffer had nothing servable: a skip (the worker waited `seconds` for one)."""
        self.skips += 1
        self.idle += seconds

    def got(self, entry):
        """A batch was taken from the input buffer; `entry` is the buffer's `RingEntry` (or None: the data)."""
        if entry is None or self.input_is_data:
            return
        self.gets += 1
        staleness = max(0, int(entry.pushed) - 1 - int(entry.serial))
        self.staleness_sum += staleness
        self.staleness_max = max(self.staleness_max, staleness)
        self.occupancy_sum += int(entry.stored)
        self.replayed += int(entry.uses) > 1

    def computed(self, start, end, samples):
        """One step (every module of the worker) ran from `start` to `end` (time.time()) on `samples`."""
        self.steps += 1
        self.samples += int(samples)
        self.busy += end - start
        self.intervals.append([start - self.run_started, end - self.run_started])
        if len(self.intervals) > self.max_intervals:
            # Merge neighbours pairwise: the chart keeps its shape, the file stays small.
            merged = [[a[0], b[1]] for a, b in zip(self.intervals[0::2], self.intervals[1::2])]
            if len(self.intervals) % 2:
                merged.append(self.intervals[-1])
            self.intervals = merged

    def summary(self):
        span = self.busy + self.idle
        gets = max(self.gets, 1)
        return {"worker": self.index, "steps": self.steps, "skips": self.skips, "samples": self.samples,
                "replayed": self.replayed, "busy_seconds": self.busy, "idle_seconds": self.idle,
                "busy_fraction": self.busy / span if span else 0.0,
                "samples_per_second": self.samples / span if span else 0.0,
                "staleness_mean": self.staleness_sum / gets if self.gets else 0.0,
                "staleness_max": self.staleness_max,
                "occupancy_mean": self.occupancy_sum / gets if self.gets else 0.0,
                "timeline": [[round(a, 5), round(b, 5)] for a, b in self.intervals]}


def epoch_losses(step_losses, batches_per_epoch, epochs):
    """Sample-weighted mean loss of each epoch from [(loss, samples)] per step (NaN for an empty epoch)."""
    means = []
    for e in range(epochs):
        chunk = step_losses[e * batches_per_epoch:(e + 1) * batches_per_epoch]
        n = sum(s for _, s in chunk)
        means.append(sum(loss * s for loss, s in chunk) / n if n else math.nan)
    return means


def plot_timeline(workers, path, title=None):
    """Gantt chart of a run: one row per worker, a bar per busy interval, idle time left blank.

    workers: the per-worker metric dicts of a run (each with "worker", "timeline" and optionally "modules");
    the lists of several epochs may be concatenated (their timelines share the run's start). Writes `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {}
    for m in workers:
        rows.setdefault(int(m["worker"]), []).append(m)
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.6 * len(rows)))
    end = max((b for m in workers for _, b in m.get("timeline", [])), default=0.0)
    for row, entries in sorted(rows.items()):
        bars = [(a, b - a) for m in entries for a, b in m.get("timeline", [])]
        ax.broken_barh(bars, (row - 0.4, 0.8), color=f"C{row % 10}")
        busy = sum(m.get("busy_seconds", 0.0) for m in entries)
        idle = sum(m.get("idle_seconds", 0.0) for m in entries)
        share = busy / (busy + idle) if busy + idle else 0.0
        ax.text(end * 1.01, row, f"{100 * share:.0f}% busy", va="center", fontsize=8)
    labels = []
    for row, entries in sorted(rows.items()):
        modules = entries[0].get("modules")
        labels.append(f"worker {row}" + (f"\nmodules {modules[0]}-{modules[-1]}" if modules and len(modules) > 1
                                          else f"\nmodule {modules[0]}" if modules else ""))
    ax.set_yticks(sorted(rows))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, end * 1.12 if end else 1.0)
    ax.set_xlabel("seconds since the start of the run (bars: computing; gaps: waiting)")
    ax.set_title(title or "worker timeline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
