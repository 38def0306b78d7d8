"""How fast would a pipeline of J modules run on J devices? A documented model, simulated and solved.

Analysis, not runtime: nothing here starts a process or moves a batch. Stage j needs stage_seconds[j] per
batch on a device of its own; each link between stages is its own channel, busy latency + bytes / bandwidth
per batch; receivers hold M batches, "fifo" or "replay" (the two policies of `shm_ring.SharedRing`);
optional compressed buffers; P < J shared cores by processor sharing.

- `simulate_pipeline(...)`: event by event, N batches: throughput and per-stage busy/starved/blocked.
- `pipeline_throughput(...)`: the closed-form steady state (exact, or a bound where the design notes say).
- `in_process_throughput(...)`: one process running every module in turn, the speed-up's baseline.

Design notes (every assumption, the closed form and when it is exact): docs/design/throughput-model.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .runtime.pipeline import split_modules
from .trainers.buffers import replay_choice

POLICIES = ("fifo", "replay")
_EPS = 1e-12  # seconds: events closer than this happen together

# Link speeds used in the benchmark's figure, in bytes per second, with typical one-way latencies (s).
# Nominal rates; what an application sees is lower (TCP, protocol overheads), which the model does not try
# to guess.
LINKS = {
    "1 Gb/s Ethernet": (1e9 / 8, 50e-6),
    "10 Gb/s Ethernet": (10e9 / 8, 20e-6),
    "PCIe 4.0 x16 (~25 GB/s)": (25e9, 5e-6),
}


@dataclass(frozen=True)
class Compression:
    """Compressed buffers: links carry bytes / ratio; the producer pays `encode_seconds` per batch it sends
    and the consumer `decode_seconds` per batch it uses (seconds on the stage's own device)."""

    ratio: float = 1.0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0


# --- inputs -------------------------------------------------------------------------------------------------
def _check_inputs(
    stage_seconds, bytes_out, bandwidth, latency, slots, policy, compression, devices, batch_size, reuse_cap=None
):
    """Validate and normalise; returns (c, t, J): per-stage compute incl. codec, per-link transfer time."""
    try:
        seconds = [float(s) for s in stage_seconds]
    except TypeError:
        raise ValueError(
            f"stage_seconds must be a list of seconds per batch, one per stage, got {stage_seconds!r}."
        ) from None
    J = len(seconds)
    if J < 1:
        raise ValueError("stage_seconds is empty: give one compute time (seconds per batch) per stage.")
    if any(not math.isfinite(s) or s <= 0 for s in seconds):
        raise ValueError(f"stage_seconds must be finite and > 0 (every stage does some work per batch), got {seconds}.")
    if isinstance(bytes_out, (int, float)):
        sent = [float(bytes_out)] * (J - 1)
    else:
        sent = [float(b) for b in bytes_out]
        if len(sent) != J - 1:
            raise ValueError(
                f"bytes_out needs one number per link, i.e. J - 1 = {J - 1} for {J} stages (the last "
                f"stage sends nothing), got {len(sent)}; or one number for every link."
            )
    if any(not math.isfinite(b) or b < 0 for b in sent):
        raise ValueError(f"bytes_out must be finite and >= 0, got {sent}.")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0 bytes/s (math.inf for free links), got {bandwidth}.")
    if not (math.isfinite(latency) and latency >= 0):
        raise ValueError(f"latency must be a finite number of seconds >= 0, got {latency}.")
    if int(slots) != slots or slots < 1:
        raise ValueError(f"slots (buffer size M) must be an integer >= 1, got {slots}.")
    if policy not in POLICIES:
        raise ValueError(
            f"policy must be one of {POLICIES} ('fifo': producer blocks on a full buffer; 'replay': "
            f"never blocks, consumer reuses batches), got {policy!r}."
        )
    if reuse_cap is not None and (int(reuse_cap) != reuse_cap or reuse_cap < 1):
        raise ValueError(f"reuse_cap must be None or an integer >= 1, got {reuse_cap}.")
    if devices is not None and (int(devices) != devices or devices < 1):
        raise ValueError(f"devices must be None (one device per stage) or an integer >= 1, got {devices}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}.")
    codec = compression or Compression()
    if not isinstance(codec, Compression):
        raise ValueError(
            f"compression must be a Compression(ratio, encode_seconds, decode_seconds) or None, got {compression!r}."
        )
    if not codec.ratio >= 1 or codec.encode_seconds < 0 or codec.decode_seconds < 0:
        raise ValueError(f"compression needs ratio >= 1 and codec seconds >= 0, got {codec}.")
    c = [
        s + (codec.encode_seconds if j < J - 1 else 0.0) + (codec.decode_seconds if j > 0 else 0.0)
        for j, s in enumerate(seconds)
    ]
    t = [latency + (b / codec.ratio) / bandwidth for b in sent] + [0.0]
    return c, t, J


def group_stages(module_seconds, module_bytes_out, stages):
    """Group per-module costs into `stages` contiguous stages, as the engine does (`split_modules` by cost).

    module_seconds: seconds per batch of each module; module_bytes_out: bytes per batch each module outputs
    (len = modules; the last one's is not used). Returns (stage_seconds, bytes_out per link, groups).
    """
    if len(module_bytes_out) != len(module_seconds):
        raise ValueError(f"module_bytes_out has {len(module_bytes_out)} entries for {len(module_seconds)} modules.")
    groups = split_modules(len(module_seconds), stages, list(module_seconds))
    stage_seconds = [sum(module_seconds[i] for i in g) for g in groups]
    bytes_out = [module_bytes_out[g[-1]] for g in groups[:-1]]
    return stage_seconds, bytes_out, groups


# --- closed form ----------------------------------------------------------------------------------------------
def in_process_throughput(stage_seconds, batch_size=1):
    """Samples/s of one process running every module in turn: batch_size / sum(stage_seconds)."""
    return batch_size / sum(float(s) for s in stage_seconds)


def pipeline_throughput(
    stage_seconds,
    bytes_out=0.0,
    bandwidth=math.inf,
    latency=0.0,
    policy="fifo",
    compression=None,
    devices=None,
    batch_size=1,
):
    """Steady-state samples/s entering the pipeline (docs/design/throughput-model.md: the formula and when it
    is exact): fifo: min(1 / max_j max(c_j, t_j), P / sum_j c_j); replay: min(1, P / J) / c_0, times
    batch_size. c_j includes the codec's seconds; t_j = latency + bytes_out[j] / ratio / bandwidth."""
    c, t, J = _check_inputs(stage_seconds, bytes_out, bandwidth, latency, 1, policy, compression, devices, batch_size)
    share = 1.0 if devices is None else min(1.0, devices / J)
    if policy == "replay":
        return batch_size * share / c[0]
    slowest = max(max(cj, tj) for cj, tj in zip(c, t))
    rate = 1.0 / slowest if slowest > 0 else math.inf
    if devices is not None:
        rate = min(rate, devices / sum(c))
    return batch_size * rate


# --- event-driven simulation --------------------------------------------------------------------------------
class _Stage:
    def __init__(self, seconds):
        self.seconds = seconds
        self.state = "starved"  # starved (waiting for input) | computing | blocked (fifo: output can't go) | done
        self.remaining = 0.0  # seconds of own-device work left in the current step
        self.item_fresh = True
        self.finished_at = []  # completion time of each step
        self.time = {"computing": 0.0, "starved": 0.0, "blocked": 0.0, "done": 0.0}
        self.skip_counted = False
        self.steps = self.fresh_steps = self.replays = self.skips = 0
        self.waiting = False  # replay: nothing servable; the wait counts as a skip once time passes in it

    def start_step(self, fresh):
        self.state, self.remaining, self.item_fresh = "computing", self.seconds, fresh
        self.waiting = self.skip_counted = False


class _Link:
    def __init__(self, seconds):
        self.seconds = seconds
        self.outbox = None  # a finished output waiting for the link (serial)
        self.in_flight = None  # (serial, arrival time)
        self.buffer = []  # stored batches at the receiver: [serial, uses]
        self.sent = self.dropped_before_send = self.overwritten_unused = 0


class _Simulation:
    """The pipeline's state at time `now`, and the rules that move it on (docs/design/throughput-model.md)."""

    def __init__(self, c, t, batches, slots, policy, reuse_cap, devices, max_steps):
        self.stages = [_Stage(s) for s in c]
        self.links = [_Link(s) for s in t[:-1]]  # links[j]: stage j -> stage j+1, with stage j+1's buffer
        self.slots, self.policy, self.reuse_cap, self.devices, self.max_steps = (
            slots,
            policy,
            reuse_cap,
            devices,
            max_steps,
        )
        self.data_left, self.serial, self.now = int(batches), 0, 0.0

    def upstream_finished(self, j):
        """Stage j's producer has stopped and nothing is on its way to stage j any more."""
        link = self.links[j - 1]
        return self.stages[j - 1].state == "done" and link.outbox is None and link.in_flight is None

    def try_take_input(self, j):
        stage = self.stages[j]
        if self.max_steps is not None and stage.steps >= self.max_steps:
            stage.state = "done"
        elif j == 0:
            if self.data_left > 0:
                self.data_left -= 1
                stage.start_step(True)
            else:
                stage.state = "done"
        elif self.policy == "fifo":
            buffer = self.links[j - 1].buffer
            if buffer and buffer[0] is not None:  # None: a reserved slot whose batch is still in flight
                buffer.pop(0)  # oldest first; its slot is free again
                stage.start_step(True)
            elif self.upstream_finished(j):
                stage.state = "done"
        else:
            self.take_replay(j)

    def take_replay(self, j):
        """Among stored batches with the fewest uses, the freshest (the engine's replay_choice)."""
        stage, buffer = self.stages[j], self.links[j - 1].buffer
        if not any(entry[1] == 0 for entry in buffer) and self.upstream_finished(j):
            stage.state = "done"
            return
        pick = replay_choice([e[1] for e in buffer], [e[0] for e in buffer], self.reuse_cap) if buffer else None
        if pick is None:
            stage.waiting = True
            return
        buffer[pick][1] += 1
        stage.start_step(buffer[pick][1] == 1)

    def try_send(self, j):
        """Move stage j's finished output onto link j if the link (and, for fifo, a slot) is free."""
        link, stage = self.links[j], self.stages[j]
        if link.outbox is None or link.in_flight is not None:
            return
        if self.policy == "fifo" and len(link.buffer) >= self.slots:
            return  # every slot reserved: the producer stays blocked
        link.in_flight = (link.outbox, self.now + link.seconds)
        link.outbox = None
        link.sent += 1
        if self.policy == "fifo":
            link.buffer.append(None)  # reserve the slot now; filled on arrival
            stage.state = "starved"  # its output is on its way: ready for the next batch

    def finish_step(self, j):
        stage = self.stages[j]
        stage.steps += 1
        stage.fresh_steps += stage.item_fresh
        stage.replays += not stage.item_fresh
        stage.finished_at.append(self.now)
        if j == len(self.stages) - 1:
            stage.state = "starved"
            return
        link = self.links[j]
        if link.outbox is not None:  # replay only: fifo never computes with a full outbox
            link.dropped_before_send += 1
        link.outbox = self.serial
        self.serial += 1
        stage.state = "blocked" if self.policy == "fifo" else "starved"

    def arrive(self, j):
        link = self.links[j]
        sent_serial, _ = link.in_flight
        link.in_flight = None
        if self.policy == "fifo":
            link.buffer[link.buffer.index(None)] = [sent_serial, 0]
            return
        if len(link.buffer) >= self.slots:  # replace the oldest stored batch
            oldest = min(range(len(link.buffer)), key=lambda i: link.buffer[i][0])
            link.overwritten_unused += link.buffer[oldest][1] == 0
            link.buffer.pop(oldest)
        link.buffer.append([sent_serial, 0])

    def snapshot(self):
        return (
            tuple(s.state for s in self.stages),
            tuple(
                (l.outbox, l.in_flight, len(l.buffer), tuple(tuple(e) if e else None for e in l.buffer))
                for l in self.links
            ),
            self.data_left,
        )

    def settle(self):
        """Apply every consequence of the current state at `now` until nothing changes."""
        changed = True
        while changed:
            before = self.snapshot()
            for j, link in enumerate(self.links):
                if link.in_flight is not None and link.in_flight[1] <= self.now + _EPS:  # zero-time transfers
                    self.arrive(j)
            for j in range(len(self.links)):
                self.try_send(j)
            for j, stage in enumerate(self.stages):
                if stage.state == "starved":
                    self.try_take_input(j)
            changed = self.snapshot() != before

    def run(self):
        """Move from event to event (a step ends, a batch arrives) until every stage is done; returns the end."""
        stages = self.stages
        self.settle()
        while any(s.state != "done" for s in stages):
            computing = [s for s in stages if s.state == "computing"]
            rate = 1.0 if self.devices is None or not computing else min(1.0, self.devices / len(computing))
            candidates = [self.now + s.remaining / rate for s in computing]
            candidates += [l.in_flight[1] for l in self.links if l.in_flight is not None]
            if not candidates:
                raise RuntimeError(
                    "simulate_pipeline: no event can happen but stages are not done (a bug in the model)."
                )
            later = min(candidates)
            dt = later - self.now
            for s in stages:
                if s.waiting and s.state == "starved" and dt > _EPS and not s.skip_counted:
                    s.skips += 1  # a wait that takes time (not one resolved by an arrival at the same instant)
                    s.skip_counted = True
                s.time[s.state] += dt
                if s.state == "computing":
                    s.remaining -= dt * rate
            self.now = later
            for j, s in enumerate(stages):
                if s.state == "computing" and s.remaining <= _EPS * max(1.0, s.seconds):
                    self.finish_step(j)
            self.settle()  # arrivals due now, then sends and takes
        return self.now


def _middle_rate(times):
    """Steps per second between the end of the first quarter of the steps and the end of the third."""
    n = len(times)
    a, b = n // 4, (3 * n) // 4
    if a < 1 or b <= a:  # too few steps for a middle: the average over the whole run
        return n / times[-1]
    return (b - a) / (times[b - 1] - times[a - 1])


def _stage_report(j, stage, link, total):
    entry = {
        "stage": j,
        "steps": stage.steps,
        "fresh_steps": stage.fresh_steps,
        "replays": stage.replays,
        "skips": stage.skips,
        **{
            k: stage.time[state] / total if total else 0.0
            for k, state in (("busy", "computing"), ("starved", "starved"), ("blocked", "blocked"))
        },
    }
    if link is not None:
        entry.update(
            received=link.sent, dropped_before_send=link.dropped_before_send, overwritten_unused=link.overwritten_unused
        )
    return entry


def simulate_pipeline(
    stage_seconds,
    batches,
    bytes_out=0.0,
    bandwidth=math.inf,
    latency=0.0,
    slots=2,
    policy="fifo",
    reuse_cap=None,
    compression=None,
    devices=None,
    batch_size=1,
    max_steps=None,
):
    """Run `batches` data batches through the pipeline of the model (docs/design/throughput-model.md), event by event.

    stage_seconds: compute seconds per batch of each of the J stages (own device). bytes_out: bytes per
    batch each link carries (J - 1 numbers, or one for all). bandwidth (bytes/s), latency (s): of every
    link. slots: buffer size M at each receiver. policy: "fifo" or "replay" (with optional reuse_cap).
    compression: a `Compression` or None. devices: None (one per stage) or P shared cores. max_steps: every
    stage stops after this many steps (an old rule of the engine, docs/design/throughput-model.md); None
    (the engine's rule): a stage stops only when its input runs out. With fifo it must be None or >= batches.

    Returns a dict: "seconds" (until the last stage stops), "input_samples_per_s" (fresh samples taken by
    stage 0, over the time until its last step ends), "output_samples_per_s" (steps of the last stage, fresh
    or replayed, over "seconds"), "steady_input_samples_per_s" / "steady_output_samples_per_s" (the same
    rates from the middle half of stage 0's / the last stage's steps, without start-up and drain),
    "steady_samples_per_s" (the pipeline's steady throughput: the output rate for fifo, the fresh input rate
    for replay; `pipeline_throughput` predicts it), "in_process_samples_per_s" and "speedup" (steady over
    in-process), and "stages": per stage, steps, fresh_steps, replays, skips,
    busy / starved / blocked fractions of "seconds", and for the link into it (stages > 0) batches sent,
    dropped_before_send and overwritten_unused.
    """
    c, t, J = _check_inputs(
        stage_seconds, bytes_out, bandwidth, latency, slots, policy, compression, devices, batch_size, reuse_cap
    )
    if int(batches) != batches or batches < 1:
        raise ValueError(f"batches must be an integer >= 1, got {batches}.")
    if max_steps is not None and (
        int(max_steps) != max_steps or max_steps < 1 or (policy == "fifo" and max_steps < batches)
    ):
        raise ValueError(
            f"max_steps must be None or an integer >= 1 (and >= batches = {batches} for fifo, where a "
            f"stage that stops early would block its producer forever), got {max_steps}."
        )
    sim = _Simulation(c, t, batches, slots, policy, reuse_cap, devices, max_steps)
    total = sim.run()
    first, last = sim.stages[0], sim.stages[-1]
    steady_in = batch_size * _middle_rate(first.finished_at)
    steady_out = batch_size * _middle_rate(last.finished_at)
    # The pipeline's steady throughput. fifo: what the last stage completes (every batch once; stage 0's own
    # rate runs ahead while the buffers fill, which in a long pipeline reaches into the middle of the run).
    # replay: fresh batches into stage 0 (the last stage's steps include replays).
    steady = steady_out if policy == "fifo" else steady_in
    baseline = in_process_throughput(stage_seconds, batch_size)
    return {
        "policy": policy,
        "stages_count": J,
        "devices": devices,
        "batches": int(batches),
        "seconds": total,
        "input_samples_per_s": batch_size * first.steps / first.finished_at[-1],
        "output_samples_per_s": batch_size * last.steps / total,
        "steady_input_samples_per_s": steady_in,
        "steady_output_samples_per_s": steady_out,
        "steady_samples_per_s": steady,
        "in_process_samples_per_s": baseline,
        "speedup": steady / baseline,
        "stages": [_stage_report(j, s, sim.links[j - 1] if j else None, total) for j, s in enumerate(sim.stages)],
    }
