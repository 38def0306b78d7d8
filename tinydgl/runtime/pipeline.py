"""The module pipeline, written once for every transport: the plan, the worker's loop, the result.

The trainer's units (its modules; for DNI, its groups) are cut into J contiguous groups (`split_modules`),
one stage per worker (`stages`), joined by links (`links`). Worker w gets a batch from its input link, runs
its stage and puts the output and labels into its output link. Links are "fifo" for `dgl` and `lls*` (the
weights equal the in-process trainer's) and "replay" for `async-dgl`; DNI also sends each synthesizer's
target back down a second link. Samples per second counts the samples every module learned from.
Two transports add only their workers and links: `engine.run_module_parallel` (shared memory) and
`mpi_engine.run_module_parallel_mpi` (MPI ranks).

Design notes (stopping rules, DNI's targets, fresh data): docs/design/runtime.md, "The module pipeline".
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass

import numpy as np

from ..backend import asarray
from ..trainers.local import ModuleChain
from . import stages
from .metrics import epoch_losses, pipeline_counts


def split_modules(num_modules, workers, costs=None):
    """Cut modules 0..num_modules-1 into `workers` contiguous groups.

    Without `costs`: groups of equal size (earlier groups get the extra ones). With `costs` (one number per
    module): the contiguous split whose most loaded group costs least, because a pipeline runs at the pace
    of its slowest stage (the classic linear-partition problem, solved exactly by dynamic programming).
    """
    if not 1 <= int(workers) <= num_modules:
        raise ValueError(f"workers must be between 1 and {num_modules} (the trainer's modules), got {workers}.")
    k = int(workers)
    if costs is None:
        sizes = [num_modules // k + (1 if i < num_modules % k else 0) for i in range(k)]
        edges = np.cumsum([0, *sizes]).tolist()
        return [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:])]
    if len(costs) != num_modules:
        raise ValueError(f"costs has {len(costs)} entries for {num_modules} modules.")
    prefix = np.cumsum([0.0, *costs])
    # best[g][n]: the least possible maximum load when the first n modules form g groups; cut[g][n]: where
    # the last of those groups starts.
    best = np.full((k + 1, num_modules + 1), np.inf)
    cut = np.zeros((k + 1, num_modules + 1), dtype=int)
    best[0][0] = 0.0
    for g in range(1, k + 1):
        for n in range(g, num_modules + 1):
            for start in range(g - 1, n):
                load = max(best[g - 1][start], prefix[n] - prefix[start])
                if load < best[g][n]:
                    best[g][n], cut[g][n] = load, start
    edges, n = [num_modules], num_modules
    for g in range(k, 0, -1):
        n = cut[g][n]
        edges.append(n)
    edges = edges[::-1]
    return [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:])]


def check_groups(groups, num_units):
    """An explicit split, e.g. [[0, 1], [2, 3]], as lists of ints; raises unless it cuts units
    0..num_units-1 into contiguous, non-empty groups, in order."""
    groups = [list(map(int, g)) for g in groups]
    if [j for g in groups for j in g] != list(range(num_units)) or not all(groups):
        raise ValueError(
            f"groups {groups} must cut modules 0..{num_units - 1} into contiguous, non-empty groups, in order."
        )
    return groups


@dataclass
class PipelinePlan:
    """What every worker of a run agrees on. policy: of the links between workers ("fifo" or "replay");
    reuse_cap: replay only; slots: batches per link; total: batches every fifo worker steps; shapes[u]:
    unit u's output sample shape; dtype: the activations'; talks_back: DNI (targets come back down)."""

    policy: str
    reuse_cap: int | None
    slots: int
    batches_per_epoch: int
    total: int
    shapes: list
    dtype: np.dtype
    talks_back: bool


def plan_pipeline(trainer, train_loader, epochs, start_epoch, slots, checked):
    """The plan of a run over epochs start_epoch..epochs-1. checked: the engine's trainer check,
    (policy, replay_slots, reuse_cap); slots: the caller's (default 2 for fifo, replay_slots for replay)."""
    policy, replay_slots, reuse_cap = checked
    batches_per_epoch = len(train_loader)
    total = batches_per_epoch * (epochs - start_epoch)
    if total < 1:
        raise ValueError(f"Nothing to train: {epochs - start_epoch} epoch(s) of {batches_per_epoch} batch(es).")
    return PipelinePlan(
        policy,
        reuse_cap if policy == "replay" else None,
        int(slots or replay_slots or 2),
        batches_per_epoch,
        total,
        stages.unit_output_shapes(trainer),
        np.dtype(str(trainer.model.parameters()[0].data.dtype).split(".")[-1]),
        stages.talks_back(trainer),
    )


# --- what every worker runs -------------------------------------------------------------------------------
class _StageWorker:
    """One worker's loop state: its stage, links and recorder, and the steps still waiting for a message
    from above (see `pipeline_worker_loop`)."""

    def __init__(self, stage, source, sink, recorder, keep_alive, from_above, to_below):
        self.stage, self.source, self.sink, self.recorder = stage, source, sink, recorder
        self.keep_alive, self.from_above, self.to_below = keep_alive, from_above, to_below
        self.losses = []
        self.waiting = collections.deque()  # the step numbers of batches whose message from above is still to come

    def take_from_above(self, block=False):
        """Take in the messages that came back from above (block: wait until at least one has come)."""
        recorder, stage = self.recorder, self.stage
        while self.waiting:
            t0 = time.time()
            got = self.from_above.get(timeout=1.0 if block else 0)
            if got is None:
                if not block:
                    return
                recorder.waited(time.time() - t0)
                self.keep_alive()
                continue
            t1 = time.time()
            recorder.waited(t1 - t0)
            message = asarray(got[0])
            sent_at = self.waiting.popleft()
            if stage.waits_for_above:
                stage.finish(message)
                loss = None
            else:
                loss = stage.learn_from_above(message)
            recorder.fed_back(t1, time.time(), recorder.steps - sent_at, loss)
            block = False  # one came: take what else is there, without waiting

    def while_waiting(self):
        """What a worker does while it waits for a batch or for room: take in what comes back from above (so
        two neighbours waiting on each other's full links always make progress) and check it may go on."""
        if self.from_above is not None:
            self.take_from_above()
        self.keep_alive()

    def put(self, link, x, labels, origin):
        """Put one batch into `link`, waiting (and taking in messages from above) until there is room."""
        t0 = time.time()
        # x as it is: a link copies it where it goes (host memory for a SharedRing or MPI, the GPU for a DeviceRing)
        while not link.put(x, labels, produced_at=self.recorder.steps, timeout=1.0, origin=origin):
            self.while_waiting()
        self.recorder.waited(time.time() - t0)

    def send_below(self, labels, origin):
        message = self.stage.message_below()
        if message is not None and self.to_below is not None:
            self.put(self.to_below, message, labels, origin)

    def next_batch(self, replay_input, producer_stopped):
        """The next (x, labels, entry) to step on; None: an empty poll (replay); False: nothing more (the
        producer stopped and nothing fresh is left: no replays after the end)."""
        if self.from_above is not None:
            self.take_from_above()
        t0 = self.recorder.now()
        if replay_input:
            stopped = producer_stopped()  # read before get: whatever was pushed before the stop is seen
            got = self.source.get(timeout=0.05)
            if stopped and (got is None or got[2].uses > 1):
                return False
            if got is None:
                self.recorder.empty_poll(time.time() - t0)
                self.keep_alive()
                return None
        else:
            while (got := self.source.get(timeout=0.05 if self.from_above is not None else 1.0)) is None:
                self.while_waiting()
        self.recorder.waited(time.time() - t0)
        return got

    def step(self, x, y, entry):
        """Run the stage on one batch, pass its output on, and (lock-step) wait for what comes from above."""
        stage, recorder = self.stage, self.recorder
        t1 = time.time()
        x, y = asarray(x), asarray(y)  # to this worker's backend and device (a no-op on NumPy)
        origin = recorder.got(entry)
        loss, x = stage.step(x, y, origin)
        recorder.computed(t1, time.time(), int(y.shape[0]))
        expects = self.from_above is not None and stage.expects_from_above()
        if expects:
            self.waiting.append(recorder.steps)
        if not stage.waits_for_above:
            self.send_below(y, origin)
        if self.sink is None:
            self.losses.append((float(loss), int(y.shape[0])))
        else:
            self.put(self.sink, x, y, origin)
        if stage.waits_for_above:  # lock-step (BP(lambda)): this batch's update needs what comes from above
            if expects:
                self.take_from_above(block=True)
            else:
                stage.finish(None)
            self.send_below(y, origin)


def pipeline_worker_loop(
    stage,
    source,
    sink,
    total_batches,
    recorder,
    replay_input=False,
    producer_stopped=lambda: False,
    keep_alive=lambda: None,
    from_above=None,
    to_below=None,
):
    """The loop every module-parallel worker runs, whatever carries its batches (shared-memory rings or MPI
    messages: `links`): get a batch, run its stage on it, pass the output on; and, for stages whose units
    talk back (DNI), send back down what the stage computed for the stage below and take in what the stage
    above sent back, whenever it comes.

    stage: what `trainer.pipeline_stage` built (a list of local modules is taken as a `ModuleChain`).
    source: a `links.Source`; sink: a `links.Sink`, None for the last worker. from_above / to_below: the
    backward links, None where there is no stage above / below (a BP(lambda) stage waits for each message).
    replay_input: the source is a replay buffer ("nothing servable" is an empty poll; once
    `producer_stopped()` the worker serves what was never served and stops). keep_alive(): called while
    waiting (raises to stop the worker). recorder: the worker's `WorkerRecorder` (origins, lateness).
    Returns the last worker's [(loss, samples)] per step. docs/design/runtime.md, "The module pipeline".
    """
    if isinstance(stage, (list, tuple)):
        stage = ModuleChain(stage)
    worker = _StageWorker(stage, source, sink, recorder, keep_alive, from_above, to_below)
    # fifo: exactly one step per data batch. replay: replays are steps too, so the count says nothing about
    # the data; such a worker runs until its producer has stopped and every fresh batch has been served.
    while replay_input or recorder.steps < total_batches:
        got = worker.next_batch(replay_input, producer_stopped)
        if got is False:
            break
        if got is not None:
            worker.step(*got)
    while worker.waiting:  # the targets of the last batches are still on their way back
        worker.take_from_above(block=True)
    return worker.losses


def run_stage(
    stage, source, sink, plan, recorder, replay_input, keep_alive=lambda: None, from_above=None, to_below=None
):
    """`pipeline_worker_loop` over a worker's links, then end every link cleanly; returns its losses.

    The links down end first, from the top worker down (each worker's from_above waits for the worker above
    to finish its to_below), then the links up: no worker waits on one that waits on it."""
    losses = pipeline_worker_loop(
        stage,
        source,
        sink,
        plan.total,
        recorder,
        replay_input,
        source.producer_stopped,
        keep_alive,
        from_above=from_above,
        to_below=to_below,
    )
    for link in (from_above, to_below, source, sink):
        if link is not None:
            link.finish()
    return losses


def pipeline_result(trainer, groups, reports, plan, epochs_run, seconds, rings):
    """Load what the workers learned into `trainer` and build the run's metrics.

    reports[w]: worker w's (state, `WorkerRecorder.summary()`, losses); rings: the links' stats, input side
    first. Returns {"workers": [summary + "modules"], "policy", "seconds", "samples" (that every module
    learned from), "fed_samples", "samples_per_second", "train_loss" (per epoch; fifo only), "last_loss",
    "rings"}."""
    workers = []
    for group, (state, summary, _) in zip(groups, reports):
        trainer.load_pipeline_stage(group, state)  # the model's blocks are the stages' units
        workers.append({**summary, "modules": group})
    losses = reports[-1][2]
    train_loss = epoch_losses(losses, plan.batches_per_epoch, epochs_run) if plan.policy == "fifo" else []
    return {
        "workers": workers,
        "policy": plan.policy,
        "seconds": seconds,
        **pipeline_counts(workers, seconds),
        "train_loss": train_loss,
        "last_loss": losses[-1][0] if losses else math.nan,
        "rings": rings,
    }
