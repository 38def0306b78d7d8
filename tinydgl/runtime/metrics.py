"""What each worker of a parallel run did, and when: busy/idle time, what it learned from, staleness, replays,
buffer occupancy.

Every worker of the parallel engines owns one `WorkerRecorder`; the worker loop tells it when it waited,
what it got and when it finished computing, and `summary()` gives the JSON-ready dict of the metrics file
(steps, samples, busy/idle seconds, fresh/replayed/skipped batches, empty polls, staleness, occupancy, the
timeline). A step is fresh when the worker has not learned from its batch's *origin* (the data batch it
was computed from) yet; `pipeline_counts` reports the minimum over workers of fresh samples as the run's
samples. `plot_timeline` draws the timelines as a Gantt chart.

Design notes (every field, staleness, DNI's returning targets): docs/design/runtime.md, "What each worker did".
"""

from __future__ import annotations

import math
import time

MAX_INTERVALS = 2000  # timeline bars kept per worker; beyond it neighbouring bars are merged


class WorkerRecorder:
    """Running metrics of one worker. Times come from `time.time()` (seconds, shared across processes).

    input_is_data: the worker reads the data set, each batch once, in order (its "staleness" would only be
    the loader's backlog). fed_batches: the data batches of the run this worker is meant to learn from (a
    pipeline stage: every one), so that the summary can count those it skipped; None for a data-parallel
    worker, which shares the batches out with the other copies of the model: none of them is skipped.
    """

    def __init__(self, index, run_started, input_is_data=False, fed_batches=None, max_intervals=MAX_INTERVALS):
        self.index, self.run_started, self.max_intervals = index, float(run_started), int(max_intervals)
        self.input_is_data = bool(input_is_data)
        self.fed_batches = None if fed_batches is None else int(fed_batches)
        self.steps = self.samples = self.empty_polls = 0
        self.fresh_batches = self.fresh_samples = self.replayed_batches = self.replayed_samples = 0
        self.learned = set()  # origins (data batch numbers) this worker has learned from
        self.fresh = True  # whether the batch of the coming step is new to this worker (set by `got`)
        self.busy = self.idle = 0.0
        self.staleness_sum = self.staleness_max = 0
        self.occupancy_sum = 0
        self.gets = 0
        self.intervals = []  # [start, end] of busy periods, seconds since run_started
        self.first_time = self.last_time = None
        # messages that came back from the stage above (DNI: its synthesizer's targets)
        self.fed_back_count, self.lateness_sum, self.lateness_max, self.lateness_counts = 0, 0, 0, {}
        self.feedback_loss_sum, self.feedback_loss_count, self.feedback_loss_last = 0.0, 0, None
        self.feedback_times = []  # [start, end] of the work each message caused, seconds since run_started

    def now(self):
        t = time.time()
        if self.first_time is None:
            self.first_time = t
        self.last_time = t
        return t

    def waited(self, seconds):
        self.idle += seconds

    def empty_poll(self, seconds):
        """A replay buffer had nothing servable (the worker waited `seconds` for one and found none)."""
        self.empty_polls += 1
        self.idle += seconds

    def got(self, entry):
        """A batch was taken from the input buffer; `entry` is the buffer's `RingEntry` (or None: the data).

        Returns the batch's origin, the number of the data batch it was computed from, which the worker
        passes on with its output (docs/design/runtime.md)."""
        if entry is None or self.input_is_data:
            origin = self.steps  # the data reader takes every data batch once, in order: its steps number them
        else:
            origin = int(entry.serial if entry.origin is None else entry.origin)
            self.gets += 1
            staleness = max(0, int(entry.pushed) - 1 - int(entry.serial))
            self.staleness_sum += staleness
            self.staleness_max = max(self.staleness_max, staleness)
            self.occupancy_sum += int(entry.stored)
        self.fresh = origin not in self.learned
        self.learned.add(origin)
        return origin

    def computed(self, start, end, samples):
        """One step (every module of the worker) ran from `start` to `end` (time.time()) on `samples`.

        A step without `got` before it (a data-parallel worker reading its batch directly) is fresh."""
        self.steps += 1
        self.samples += int(samples)
        if self.fresh:
            self.fresh_batches += 1
            self.fresh_samples += int(samples)
        else:
            self.replayed_batches += 1
            self.replayed_samples += int(samples)
        self.fresh = True
        self.busy += end - start
        self.intervals.append([start - self.run_started, end - self.run_started])
        if len(self.intervals) > self.max_intervals:
            # Merge neighbours pairwise: the chart keeps its shape, the file stays small.
            merged = [[a[0], b[1]] for a, b in zip(self.intervals[0::2], self.intervals[1::2])]
            if len(self.intervals) % 2:
                merged.append(self.intervals[-1])
            self.intervals = merged

    def fed_back(self, start, end, lateness, loss=None):
        """A message came back from the stage above (DNI: the target of this worker's top synthesizer) and
        was learned from between `start` and `end`. lateness: the batches this worker had run since the one
        the message is for (0: it came before the next step); loss: the regression loss it gave, or None."""
        self.fed_back_count += 1
        self.lateness_sum += int(lateness)
        self.lateness_max = max(self.lateness_max, int(lateness))
        self.lateness_counts[int(lateness)] = self.lateness_counts.get(int(lateness), 0) + 1
        if loss is not None and math.isfinite(float(loss)):
            self.feedback_loss_sum += float(loss)
            self.feedback_loss_count += 1
            self.feedback_loss_last = float(loss)
        self.busy += end - start
        if len(self.feedback_times) < self.max_intervals:
            self.feedback_times.append([start - self.run_started, end - self.run_started])

    def summary(self):
        span = self.busy + self.idle
        gets = max(self.gets, 1)
        skipped = self.fed_batches - self.fresh_batches if self.fed_batches is not None else 0
        return {
            "worker": self.index,
            "steps": self.steps,
            "samples": self.samples,
            "fresh_batches": self.fresh_batches,
            "fresh_samples": self.fresh_samples,
            "replayed_batches": self.replayed_batches,
            "replayed_samples": self.replayed_samples,
            "skipped_batches": skipped,
            "empty_polls": self.empty_polls,
            "busy_seconds": self.busy,
            "idle_seconds": self.idle,
            "busy_fraction": self.busy / span if span else 0.0,
            "samples_per_second": self.samples / span if span else 0.0,
            "staleness_mean": self.staleness_sum / gets if self.gets else 0.0,
            "staleness_max": self.staleness_max,
            "occupancy_mean": self.occupancy_sum / gets if self.gets else 0.0,
            "timeline": [[round(a, 5), round(b, 5)] for a, b in self.intervals],
            **self._feedback_summary(),
        }

    def _feedback_summary(self):
        """The synthesizer's targets, for a worker that got any: how many, how late, the regression loss."""
        if not self.fed_back_count:
            return {}
        losses = self.feedback_loss_count
        return {
            "targets_received": self.fed_back_count,
            "target_lateness_mean": self.lateness_sum / self.fed_back_count,
            "target_lateness_max": self.lateness_max,
            "target_lateness_counts": {str(k): v for k, v in sorted(self.lateness_counts.items())},
            "synthesizer_loss_mean": self.feedback_loss_sum / losses if losses else None,
            "synthesizer_loss_last": self.feedback_loss_last,
            "feedback_timeline": [[round(a, 5), round(b, 5)] for a, b in self.feedback_times],
        }


def pipeline_counts(workers, seconds):
    """The run's throughput figures for a module pipeline, from its workers' summaries (stage order):
    {"samples": fresh samples of the worker that learned from the fewest, i.e. the samples every module
    learned from (docs/protocol.md, section 4), "fed_samples": what the first, data-reading worker took,
    "samples_per_second": samples / seconds}."""
    samples = min(w["fresh_samples"] for w in workers)
    return {"samples": samples, "fed_samples": workers[0]["fresh_samples"], "samples_per_second": samples / seconds}


def work_summary(workers):
    """One short line for an epoch's log: what each worker (or module) learned from, in batches.

    workers: per-worker summaries (or async DGL's per-module `stats()["modules"]`) with fresh_batches,
    replayed_batches and skipped_batches. Returns "" when every one learned from every batch exactly once
    (fifo pipelines, data-parallel engines), so the usual line stays as it is; otherwise e.g.
    "learned from: w0 40/40; w1 31/40 + 12 replayed, 9 skipped" (fresh/fed batches, then the rest).
    """
    if all(w.get("replayed_batches", 0) == 0 and w.get("skipped_batches", 0) == 0 for w in workers):
        return ""  # (a worker that does not count them learned from every batch it was given, once)
    parts = []
    for w in workers:
        name = f"w{w['worker']}" if "worker" in w else f"m{w['module']}"
        text = f"{name} {w['fresh_batches']}/{w['fresh_batches'] + w['skipped_batches']}"
        if w["replayed_batches"]:
            text += f" + {w['replayed_batches']} replayed"
        if w["skipped_batches"]:
            text += f", {w['skipped_batches']} skipped"
        parts.append(text)
    return "learned from: " + "; ".join(parts)


def epoch_losses(step_losses, batches_per_epoch, epochs):
    """Sample-weighted mean loss of each epoch from [(loss, samples)] per step (NaN for an empty epoch)."""
    means = []
    for e in range(epochs):
        chunk = step_losses[e * batches_per_epoch : (e + 1) * batches_per_epoch]
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
    late = False
    for row, entries in sorted(rows.items()):
        bars = [(a, b - a) for m in entries for a, b in m.get("timeline", [])]
        ax.broken_barh(bars, (row - 0.4, 0.8), color=f"C{row % 10}")
        # DNI: when a synthesizer target came back from the worker above, and the work it caused
        fed = [(a, max(b - a, end * 2e-3)) for m in entries for a, b in m.get("feedback_timeline", [])]
        if fed:
            ax.broken_barh(fed, (row + 0.1, 0.3), color="black")
            late = True
        busy = sum(m.get("busy_seconds", 0.0) for m in entries)
        idle = sum(m.get("idle_seconds", 0.0) for m in entries)
        share = busy / (busy + idle) if busy + idle else 0.0
        ax.text(end * 1.01, row, f"{100 * share:.0f}% busy", va="center", fontsize=8)
    labels = []
    for row, entries in sorted(rows.items()):
        modules = entries[0].get("modules")
        labels.append(
            f"worker {row}"
            + (
                f"\nmodules {modules[0]}-{modules[-1]}"
                if modules and len(modules) > 1
                else f"\nmodule {modules[0]}"
                if modules
                else ""
            )
        )
    ax.set_yticks(sorted(rows))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, end * 1.12 if end else 1.0)
    ax.set_xlabel(
        "seconds since the start of the run (bars: computing; gaps: waiting"
        + ("; black: a late synthesizer target learned from" if late else "")
        + ")"
    )
    ax.set_title(title or "worker timeline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
