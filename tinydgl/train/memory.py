"""Will a training step at this batch size fit in memory? A cheap estimate before training, and a message
for when memory runs out anyway.

`check_batch_memory` measures a step on copies of the trainer at a few small batch sizes with tracemalloc,
and compares the growth, extrapolated to the asked batch size, with the memory this process can still get
(how, and what it costs: docs/design/checkpoints.md, "Memory before a run").

NumPy only: on CuPy the memory is the GPU's, and CuPy's own OutOfMemoryError (a MemoryError) is reported
by `out_of_memory_message` like NumPy's.
"""

import copy
import os
import tracemalloc

from ..backend import asarray, get_backend

FIRST_MEASURED = 8  # samples in the first batch measured (`step_memory` doubles it)
MEASURE_AT_MOST = 1024  # samples: beyond this, the growth per sample is extrapolated
# A doubling that adds 80% to the peak: activations dominate it, so the last doubling's growth per sample is
# close to the large batch's (a cnn's growth per sample still rises by about 40% from 8 to 64 samples).
GROWTH = 0.8
MARGIN = 0.8  # a suggested batch size leaves a fifth of the free memory to everything else


class NotEnoughMemory(RuntimeError):
    """The batch size asked for needs more memory than this process can get."""


def _meminfo_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available():
    """memory.max - memory.current of this process's cgroup (v2), None if unlimited or unknown."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
        with open(os.path.join(base, "memory.max")) as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(base, "memory.current")) as f:
            return int(limit) - int(f.read())
    except (OSError, ValueError, StopIteration):
        return None


def _address_space_available():
    """RLIMIT_AS (ulimit -v) minus what this process has mapped already; None if unlimited."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status") as f:
            mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        return limit - mapped
    except (ImportError, OSError, ValueError, StopIteration):
        return None


def available_memory():
    """(bytes, where the number comes from) of the tightest limit on this process's memory: free memory
    (MemAvailable), its cgroup's limit, its address-space limit (RLIMIT_AS). (None, None) where none is
    known (not Linux)."""
    found = [
        (v, s)
        for v, s in (
            (_meminfo_available(), "MemAvailable in /proc/meminfo"),
            (_cgroup_available(), "the cgroup's memory.max"),
            (_address_space_available(), "the address-space limit, ulimit -v"),
        )
        if v is not None
    ]
    return min(found) if found else (None, None)


def step_peak(trainer, x, y):
    """Peak bytes NumPy allocates during one `train_step(x, y)` on a copy of the trainer (tracemalloc)."""
    twin = copy.deepcopy(trainer)
    twin.to_train_weights()
    twin.model.train()
    tracing = tracemalloc.is_tracing()  # `compare` may be measuring peak memory around us
    if not tracing:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        twin.train_step(x, y)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        if not tracing:
            tracemalloc.stop()


def step_memory(trainer, make_batch, batch_size):
    """(bytes, bytes per sample): the likely peak memory of one `train_step` at `batch_size`, measured on
    copies of the trainer at batch sizes 8, 16, 32, ... from make_batch(n) -> (x, y).

    Why doubling: a step's peak is the larger of two phases, the forward/backward pass (activations, which
    grow with the batch) and the optimizer's update (parameter-sized, fixed). At a few samples the fixed
    phase can hide the growth entirely (an mlp: 5 MB of Adam temporaries against 10 KB of activations per
    sample), so the batch doubles until the peak grows nearly in step with it (GROWTH), reaches
    `batch_size` (then it is measured, not estimated) or MEASURE_AT_MOST samples; the growth of the last
    doubling is then extrapolated to `batch_size`."""
    n, previous = FIRST_MEASURED, None
    while True:
        n = min(n, batch_size)
        peak = step_peak(trainer, *make_batch(n))
        per_sample = (peak - previous[1]) / (n - previous[0]) if previous else peak / n
        if n == batch_size:
            return peak, max(per_sample, 0.0)
        if previous and (peak - previous[1] >= GROWTH * previous[1] or 2 * n > MEASURE_AT_MOST):
            per_sample = max(per_sample, 0.0)
            return peak + per_sample * (batch_size - n), per_sample
        previous, n = (n, peak), 2 * n


def _size(n_bytes):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes:.0f} bytes"


def check_batch_memory(trainer, train_loader, batch_size, available=None):
    """Raise NotEnoughMemory if a training step at `batch_size` likely needs more memory than is free,
    with the estimate, where the free memory was read, and a batch size that fits. Does nothing on CuPy
    or where the free memory is not known. available: (bytes, source) instead of `available_memory()`."""
    batch = min(batch_size, len(train_loader.x))  # a batch larger than the data is the whole data
    if get_backend().name != "numpy" or batch < 1:
        return
    free, source = available or available_memory()
    if free is None:
        return

    def make_batch(n):
        x, y = train_loader.make_batch(list(range(n)), 0, 0)
        return asarray(x, dtype=train_loader.dtype), asarray(y)

    needed, per_sample = step_memory(trainer, make_batch, batch)
    # The loader's batches in flight, float32: one in use and `prefetch` queued (4 bytes a pixel each), and one
    # being made (9: the uint8 gather, its float32 copy and the scaled copy, `DataLoader.make_batch`).
    loader = train_loader.x[0].size * (4 * (train_loader.prefetch + 1) + 9)
    needed, per_sample = needed + loader * batch, per_sample + loader
    if needed <= free:
        return
    fixed = needed - per_sample * batch
    fits = int((MARGIN * free - fixed) // per_sample) if per_sample else batch
    if fits < 1:
        advice = "not even one sample fits: free some memory, or choose a smaller model"
    else:
        suggestion = 1 << (fits.bit_length() - 1)  # a power of two that fits
        advice = f"use a smaller batch, e.g. --batch-size {suggestion}"
    raise NotEnoughMemory(
        f"--batch-size {batch_size} needs about {_size(needed)} of memory for one training step of {trainer.name} "
        f"(about {_size(per_sample)} per sample, measured on small batches), but only {_size(free)} is free "
        f"({source}): {advice}; nothing was trained."
    )


def out_of_memory_message(err, batch_size=None):
    """What to print when a MemoryError (NumPy's, or CuPy's OutOfMemoryError) ends a run."""
    detail = str(err).strip() or type(err).__name__
    if not batch_size:
        return f"out of memory ({detail}). Free some memory, or use less data (--limit-train)."
    smaller = max(1, batch_size // 4)
    return (
        f"out of memory with --batch-size {batch_size} ({detail}). A training step keeps every block's "
        f"activations for the whole batch: use a smaller batch, e.g. --batch-size {smaller}."
    )
