"""Asynchronous Decoupled Greedy Learning with replay buffers (DGL Algorithm 2), simulated in one process.

Where does each block's gradient come from? **From its module's auxiliary head**, exactly as in `dgl`
(every update is `LocalModule.step`). What changes is *when* each module runs and *which* input it sees: a
schedule draws which module runs next (modelling their relative speeds), and module j learns from batches
module j-1 left in a replay buffer B_{j-1}, possibly several times over. Nothing runs in parallel here: the
order of updates is what asynchrony does to learning. One `train_step(x, y)` is module 1's turn on x plus
every event the schedule puts before its next turn; `stats()` counts fresh, replayed and skipped batches,
reuse and staleness per module.

Paper: Belilovsky, Eickenberg, Oyallon, ICML 2020, Algorithm 2 (official simulation: cifar_buffer.py).
Design notes (the event loop, per-module epochs, the statistics, resume): docs/methods/async-dgl.md.
"""

import math

import numpy as np

from ..backend import array_namespace, asarray, default_rng, to_numpy
from .buffers import ReplayBuffer, ReplayEntry, build_codec
from .dgl import DGLTrainer
from .heads import PREDSIM_BETA
from .local import block_output_shapes

SCHEDULES = ("random", "round-robin")
MODULE_EPOCHS = ("first", "own")


class AsyncDGLTrainer(DGLTrainer):
    """Algorithm 2 of DGL in one process. Options (keyword, with defaults, for `build_trainer`):

    buffer_size: M, batches each buffer holds. schedule: "random" (draw j ~ p each event) or
    "round-robin" (1, 2, ..., J, 1, ...). slow_module / slowdown: module index (0-based) whose weight in p
    is 1/slowdown (the official `noise` is 1 - 1/slowdown); every other module has weight 1.
    warmup: visit modules 1,1,2,2,...,J,J first so buffers fill before the schedule starts (official code).
    reuse_cap: serve a buffered batch at most this many times (None: no cap). buffer_codec: None (raw
    float activations) or "vq" (`buffers.VQCodec`, `codebook_size` codewords, 2-D activations cut into
    sub-vectors of `vq_subvector` numbers); quantised_eval: evaluate through the codecs (see `predict`).
    seed: the schedule's random generator (and the heads', codecs'). module_epoch: "first" or "own"
    (docs/methods/async-dgl.md).
    """

    name = "async-dgl"

    def __init__(
        self,
        model,
        make_optimizer,
        aux="mlp",
        modules=None,
        boundaries=None,
        buffer_size=4,
        schedule="random",
        slow_module=None,
        slowdown=1.0,
        warmup=True,
        reuse_cap=None,
        buffer_codec=None,
        codebook_size=256,
        vq_subvector=8,
        quantised_eval=False,
        label_smoothing=0.0,
        seed=0,
        module_epoch="first",
        predsim_beta=PREDSIM_BETA,
    ):
        super().__init__(model, make_optimizer, aux, modules, boundaries, label_smoothing, seed, predsim_beta)
        if module_epoch not in MODULE_EPOCHS:
            raise ValueError(f"Unknown module_epoch {module_epoch!r}; choose one of: {', '.join(MODULE_EPOCHS)}.")
        self.module_epoch = module_epoch
        if schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}.")
        n = len(self.modules)
        if slow_module is not None and not 0 <= int(slow_module) < n:
            raise ValueError(
                f"slow_module must be a module index in 0..{n - 1} (this split has {n} modules), got {slow_module}."
            )
        if not slowdown >= 1.0:
            raise ValueError(
                f"slowdown must be >= 1 (1 = as fast as the others; 2 = picked half as often), got {slowdown}."
            )
        self.schedule, self.warmup = schedule, bool(warmup)
        self.probabilities = self._probabilities(n, slow_module, slowdown)
        self.slow_module, self.slowdown = slow_module, float(slowdown)
        self.rng = default_rng(seed)

        shapes = block_output_shapes(model)
        dtype = str(model.parameters()[0].data.dtype).split(".")[-1]  # "float32" (array_api_strict prefixes its name)
        # buffers[j] sits after module j: module j pushes into it, module j + 1 takes from it.
        self.codecs = [
            build_codec(buffer_codec, shapes[group[-1]], codebook_size, vq_subvector, seed=seed + 2000 + j, dtype=dtype)
            for j, group in enumerate(self.groups[:-1])
        ]
        self.buffer_codec = buffer_codec if buffer_codec not in ("raw", "none") else None
        self.quantised_eval = bool(quantised_eval)
        self.buffers = [ReplayBuffer(buffer_size, codec, reuse_cap) for codec in self.codecs]
        self.raw_bytes_per_sample = [int(math.prod(shapes[g[-1]])) * np.dtype(dtype).itemsize for g in self.groups[:-1]]

        self._warmup_queue = [j for j in range(n) for _ in range(2)] if self.warmup else []
        self._next = None  # the pick the schedule made after the last call's events: module 1's next turn
        self._cursor = -1  # round-robin position
        self.events = 0
        self.counters = [
            dict(
                picks=0,
                steps=0,
                empty_polls=0,
                staleness_sum=0,
                max_staleness=0,
                served_entries=0,
                fresh_batches=0,
                fresh_samples=0,
                replayed_batches=0,
                replayed_samples=0,
            )
            for _ in range(n)
        ]
        self.learned = [set() for _ in range(n)]  # per module: origins (data batch numbers) it learned from
        self.last_losses = [math.nan] * n
        self._call_losses = []
        self._epoch_start_steps = [0] * n  # each module's step count when the epoch began (module_epoch "own")
        self._epoch_length = None  # data batches in this epoch (`set_epoch_length`)
        self._forwarded = 0  # batches module 1 only forwarded (after its epoch): their origins are -1, -2, ...

    def pipeline_links(self):
        """On the module-parallel engines the buffers are the links: "replay" links of M batches."""
        if self.buffer_codec:
            raise ValueError(
                "The module-parallel engine stores raw activations in its rings; buffer_codec="
                f"{self.buffer_codec!r} is only supported in-process."
            )
        return (
            "replay",
            (self.buffers[0].capacity if self.buffers else 1),
            (self.buffers[0].reuse_cap if self.buffers else None),
        )

    @staticmethod
    def _probabilities(n, slow_module, slowdown):
        weights = np.ones(n)
        if slow_module is not None:
            weights[int(slow_module)] = 1.0 / float(slowdown)
        return weights / weights.sum()

    def auxiliary_modules(self):
        modules = super().auxiliary_modules()
        for j, codec in enumerate(self.codecs):
            if codec.name == "vq":
                modules[f"codec{j}"] = codec
        return modules

    # --- the schedule ---------------------------------------------------------------------------
    def _draw(self):
        """The next module the schedule picks: warm-up first, then round-robin or a draw from p."""
        if self._warmup_queue:
            return self._warmup_queue.pop(0)
        if self.schedule == "round-robin":
            self._cursor = (self._cursor + 1) % len(self.modules)
            return self._cursor
        return int(self.rng.choice(len(self.modules), p=self.probabilities))

    def _pick(self):
        j = self._draw() if self._next is None else self._next
        self._next = None
        return j

    def _peek(self):
        if self._next is None:
            self._next = self._draw()
        return self._next

    # --- one event of Algorithm 2 ---------------------------------------------------------------
    def _event(self, j, data=None):
        """Module j takes its turn: learn from `data` (module 1) or from buffer j-1; push its output."""
        self.events += 1
        counter = self.counters[j]
        counter["picks"] += 1
        if j == 0:
            x, y = data
            origin = counter["steps"]  # module 1 takes each data batch once, in order: its steps number them
        else:
            served = self.buffers[j - 1].take()
            if served is None:  # nothing (left) to learn from: the module idles this turn
                counter["empty_polls"] += 1
                return
            x, y, entry = served
            origin = entry.origin
            staleness = self.counters[j - 1]["steps"] - entry.produced_at
            counter["staleness_sum"] += staleness
            counter["max_staleness"] = max(counter["max_staleness"], staleness)
            counter["served_entries"] += entry.uses == 1
        loss, out = self.modules[j].step(x, y)  # the same local update as synchronous DGL
        counter["steps"] += 1
        if origin in self.learned[j]:  # data this module learned from before (a replay, maybe of a new entry)
            counter["replayed_batches"] += 1
            counter["replayed_samples"] += int(y.shape[0])
        else:
            self.learned[j].add(origin)
            counter["fresh_batches"] += 1
            counter["fresh_samples"] += int(y.shape[0])
        self.last_losses[j] = loss
        if j == len(self.modules) - 1:
            self._call_losses.append(loss)
        else:
            self.buffers[j].push(out, y, produced_at=counter["steps"], origin=origin)

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        self._epoch_start_steps = [c["steps"] for c in self.counters]

    def set_epoch_length(self, batches):
        """The loop says how many data batches this epoch has: with module_epoch "own", each module's updates."""
        self._epoch_length = int(batches)

    def _epoch_done(self, j):
        if self.module_epoch != "own" or self._epoch_length is None:
            return False
        return self.counters[j]["steps"] - self._epoch_start_steps[j] >= self._epoch_length

    def _turn(self, j, data=None):
        """Module j's turn: an update (`_event`), or, once it has made its epoch's updates, only a forward."""
        if not self._epoch_done(j):
            self._event(j, data)
        elif j == 0:
            self._forwarded += 1
            self._forward_only(0, data, origin=-self._forwarded)
        else:
            served = self.buffers[j - 1].take()
            if served is None:
                self.counters[j]["picks"] += 1
                self.counters[j]["empty_polls"] += 1
                return
            x, y, entry = served
            self._forward_only(j, (x, y), origin=entry.origin)

    def end_epoch(self, more_batches):
        """module_epoch "own": run the schedule on until every module has made its epoch's updates (as many
        as module 1: one per data batch). A module that is done only forwards, in evaluation mode, to feed
        the buffer above; module 1 then reads batches from the iterable `more_batches()`."""
        if self.module_epoch != "own" or self._epoch_length is None:
            return
        extra, limit = None, 1000 * (self._epoch_length + 1) * len(self.modules)
        while not all(self._epoch_done(j) for j in range(len(self.modules))):
            limit -= 1
            if limit < 0:
                raise RuntimeError("async DGL's per-module epoch did not finish: a module is never scheduled.")
            j = self._pick()
            if j == 0:
                if extra is None:
                    extra = iter(more_batches())
                batch = next(extra, None)
                if batch is None:
                    extra = iter(more_batches())
                    batch = next(extra)
                self._turn(0, batch)
            else:
                self._turn(j)

    def _forward_only(self, j, batch, origin):
        """A module that has finished its epoch: forward in evaluation mode, learn nothing, feed the buffer."""
        self.events += 1
        self.counters[j]["picks"] += 1
        if j == len(self.modules) - 1:
            return
        x, y = batch
        body = self.modules[j].body
        body.eval()
        try:
            out = body.forward(x)
        finally:
            body.train()
        self.buffers[j].push(out, y, produced_at=self.counters[j]["steps"], origin=origin)

    def train_step(self, x, y):
        """Feed data batch (x, y) to module 1, then run the events scheduled before module 1's next turn.

        Returns the last module's loss: its mean over this call's updates, or its latest loss if it made
        none in this call; before its first update (warm-up), the latest loss of the deepest module so far.
        """
        self._call_losses = []  # the last module's losses in this call (filled by _event)
        while (j := self._pick()) != 0:  # only in the first call: picks before module 1's first turn
            self._turn(j)
        self._turn(0, (x, y))
        while self._peek() != 0:
            self._turn(self._pick())
        if self._call_losses:  # the mean on the device: no host sync (`F.float64_scalar`)
            xp = array_namespace(*self._call_losses)
            return xp.mean(xp.stack(self._call_losses))
        return next(loss for loss in reversed(self.last_losses) if not (isinstance(loss, float) and math.isnan(loss)))

    def predict(self, x):
        """Logits of the whole model in evaluation mode: the plain forward pass (the default), or, with
        quantised_eval=True and VQ buffers, with activations quantised (codebooks frozen) at every module
        boundary, as they were in training. Buffers are a training-time device, and a saved model is
        evaluated with the plain pass anywhere else, so that is the default; on our runs it was also as
        good or better (benchmarks/RESULTS.md)."""
        if not (self.quantised_eval and self.buffer_codec):
            return super().predict(x)
        self.model.eval()
        try:
            for j, module in enumerate(self.modules):
                x = module.forward(x)
                if j < len(self.codecs):
                    x = self.codecs[j].forward(x)
            return x
        finally:
            self.model.train()

    # --- resume ---------------------------------------------------------------------------------
    def resume_state(self):
        """Adds the buffers' contents and bookkeeping, the schedule and the counters (docs/methods/async-dgl.md)."""
        arrays, values = super().resume_state()
        buffers = []
        for j, buffer in enumerate(self.buffers):
            entries = []
            for k, e in enumerate(buffer.entries):
                arrays[f"buffer{j}/entry{k}/payload"] = to_numpy(e.payload)
                arrays[f"buffer{j}/entry{k}/labels"] = to_numpy(e.labels)
                entries.append(
                    {
                        "uses": e.uses,
                        "serial": e.serial,
                        "produced_at": e.produced_at,
                        "samples": e.samples,
                        "origin": e.origin,
                    }
                )
            buffers.append(
                {
                    "entries": entries,
                    "pushed": buffer.pushed,
                    "dropped_unused": buffer.dropped_unused,
                    "stored_bytes": buffer.stored_bytes,
                    "stored_samples": buffer.stored_samples,
                    "codec_rng": buffer.codec.rng.bit_generator.state if hasattr(buffer.codec, "rng") else None,
                }
            )
        values.update(
            {
                "schedule_rng": self.rng.bit_generator.state,
                "warmup_queue": list(self._warmup_queue),
                "next": self._next,
                "cursor": self._cursor,
                "events": self.events,
                "counters": [dict(c) for c in self.counters],
                "learned": [sorted(s) for s in self.learned],
                "last_losses": [None if math.isnan(v) else float(v) for v in self.last_losses],
                "buffers": buffers,
                "epoch_start_steps": list(self._epoch_start_steps),
                "forwarded": self._forwarded,
            }
        )
        return arrays, values

    def load_resume_state(self, arrays, values):
        super().load_resume_state(arrays, values)
        if "buffers" not in values:  # a checkpoint without them (format 1): start with empty buffers
            return
        self.rng.bit_generator.state = values["schedule_rng"]
        self._warmup_queue, self._next, self._cursor = list(values["warmup_queue"]), values["next"], values["cursor"]
        self.events = values["events"]
        self.counters = [dict(c) for c in values["counters"]]
        self.learned = [set(s) for s in values["learned"]]
        self.last_losses = [math.nan if v is None else v for v in values["last_losses"]]
        self._epoch_start_steps = list(values.get("epoch_start_steps", self._epoch_start_steps))
        self._forwarded = int(values.get("forwarded", 0))
        for j, (buffer, saved) in enumerate(zip(self.buffers, values["buffers"])):
            buffer.entries = []
            for k, e in enumerate(saved["entries"]):
                entry = ReplayEntry(
                    asarray(arrays[f"buffer{j}/entry{k}/payload"]),
                    asarray(arrays[f"buffer{j}/entry{k}/labels"]),
                    e["serial"],
                    e["produced_at"],
                    e["samples"],
                    e["origin"],
                )
                entry.uses = e["uses"]
                buffer.entries.append(entry)
            buffer.pushed, buffer.dropped_unused = saved["pushed"], saved["dropped_unused"]
            buffer.stored_bytes, buffer.stored_samples = saved["stored_bytes"], saved["stored_samples"]
            if saved["codec_rng"] is not None:
                buffer.codec.rng.bit_generator.state = saved["codec_rng"]

    # --- statistics -----------------------------------------------------------------------------
    def fresh_samples_per_module(self):
        """Samples each module has learned from for the first time since construction (one int per module):
        module 1 every data batch it stepped on, module j > 1 every batch whose data it had not seen."""
        return [c["fresh_samples"] for c in self.counters]

    def stats(self) -> dict:
        """Scheduling and buffer statistics since construction, as plain Python numbers (JSON-ready)."""
        modules = []
        for j, c in enumerate(self.counters):
            from_buffer = j > 0
            entry = {
                "module": j,
                "probability": float(self.probabilities[j]),
                "picks": c["picks"],
                "steps": c["steps"],
                "empty_polls": c["empty_polls"],
                "fresh_batches": c["fresh_batches"],
                "fresh_samples": c["fresh_samples"],
                "replayed_batches": c["replayed_batches"],
                "replayed_samples": c["replayed_samples"],
                "skipped_batches": self.counters[0]["steps"] - c["fresh_batches"],
                "pick_share": c["picks"] / self.events if self.events else 0.0,
                "mean_reuse": (c["steps"] / c["served_entries"] if c["served_entries"] else 0.0)
                if from_buffer
                else 1.0,
                "mean_staleness": (c["staleness_sum"] / c["steps"] if c["steps"] else 0.0) if from_buffer else 0.0,
                "max_staleness": c["max_staleness"],
            }
            if from_buffer:
                entry["dropped_unused"] = self.buffers[j - 1].dropped_unused
            modules.append(entry)
        buffers = []
        for j, (buffer, raw) in enumerate(zip(self.buffers, self.raw_bytes_per_sample)):
            stored = buffer.bytes_per_sample()  # measured over every push; 0.0 before the first
            info = {
                "after_module": j,
                "codec": buffer.codec.name,
                "raw_bytes_per_sample": raw,
                "stored_bytes_per_sample": float(stored),
                "compression": raw / stored if stored else None,
            }
            if buffer.codec.name == "vq":
                info["codebook_bytes"] = buffer.codec.codebook_bytes()
            buffers.append(info)
        return {
            "schedule": self.schedule,
            "buffer_size": self.buffers[0].capacity if self.buffers else 0,
            "reuse_cap": self.buffers[0].reuse_cap if self.buffers else None,
            "warmup": self.warmup,
            "slow_module": self.slow_module,
            "slowdown": self.slowdown,
            "events": self.events,
            "modules": modules,
            "buffers": buffers,
        }
