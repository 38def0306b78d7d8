"""Elementwise and data-movement work on every core, for NumPy.

BLAS runs tinydgl's matrix products on every core, but everything between them (batch norm, activations,
pooling, padding and patch copies, the optimizer's update) is NumPy loops, and NumPy runs a loop on one
core. It does release the GIL inside those loops, so the one pure-NumPy way to use the other cores is the
one here: cut the batch into as many contiguous slices as there are threads and run the same NumPy code on
each slice in a small pool of threads.

    from tinydgl.threads import for_each_slice
    out = np.empty_like(x)
    for_each_slice(lambda s: np.maximum(x[s], 0.0, out=out[s]), x, out)   # s: slices of x's first axis

Each op keeps one body, written for "the rows in slice s", and calls it once with `slice(0, n)` when it
runs on one thread, on CuPy (a GPU needs no host threads), on any other array library, or when the array is
too small for threads to pay off. So the readable code is the code that runs, and the only thing threads
change is which rows each call sees. Ops that reduce (batch norm's per-channel sums) split their rows
into blocks of a fixed size (`row_blocks`, about BLOCK_BYTES each) that do not depend on the thread count, and add the blocks'
partial sums in order: a result is then the same to the last bit at any thread count (tests check it).

The matrix products go the same way. BLAS's own threads do not mix with these: after each product they
keep spinning for a while (about 0.1 s in OpenBLAS) in wait for the next one, on the very cores the
elementwise threads need (measured in benchmarks/RESULTS.md, "Fast on every core"). So while tinydgl uses
several threads it runs BLAS on one thread (through `threadpoolctl`) and cuts its own products into blocks
of rows for its threads (`matmul`, `matmul_tn`, `column_sums`). Your own NumPy products in the same
process then run on one thread too; `set_num_threads(1)` gives BLAS its thread count back. Where
threadpoolctl cannot see the BLAS, products stay BLAS's and only the other work is tinydgl's.

How many threads: one setting, shared with BLAS. `set_num_threads(n)` or the environment variable
``TINYDGL_NUM_THREADS``; else ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` or ``MKL_NUM_THREADS`` (the
variable a user already sets to limit BLAS); else the CPUs this process may run on (`taskset` counts).
The module-parallel engines set these variables to 1 in their workers, so a worker keeps one thread.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .backend import array_namespace

# Environment variables read, in order, for the thread count; the first one set wins.
THREAD_VARIABLES = ("TINYDGL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# Below this many bytes per thread a slice is not worth a thread (waking a thread costs ~10-50 us; a
# 256 KB elementwise pass takes about as long).
MIN_BYTES_PER_THREAD = 256 * 1024

# Reductions and products cut their rows into blocks of about this many bytes, whatever the thread count,
# so every partial sum and every BLAS call (and so every bit of a result) is the same at any thread count.
BLOCK_BYTES = 1024 * 1024

# `map_slices` computes its blocks into temporaries before copying them out: smaller blocks, less memory.
MAP_BLOCK_BYTES = 512 * 1024

_setting: int | None = None  # set_num_threads; None: from the environment
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what `taskset` allows, not the whole machine
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _from_environment() -> int:
    for name in THREAD_VARIABLES:
        text = os.environ.get(name, "").strip()
        if not text:
            continue
        try:
            value = int(text.split(",")[0])  # OMP_NUM_THREADS may be a list (nested levels)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not a whole number of threads (e.g. {name}=2).") from None
        if value < 1:
            raise ValueError(f"{name}={text!r}: the thread count must be at least 1.")
        return value
    return _available_cpus()


def num_threads() -> int:
    """The number of threads tinydgl's NumPy ops use (see the module docstring for where it comes from)."""
    return _setting if _setting is not None else _from_environment()


def set_num_threads(n: int | None) -> None:
    """Use `n` threads for elementwise and data-movement work (None: follow the environment again).

    This does not change BLAS's own thread count, which is fixed when NumPy starts; set
    ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` before Python starts to change both together.
    """
    global _setting
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"set_num_threads expects a whole number >= 1 (or None), got {n!r}.")
    _setting = n
    if num_threads() == 1:
        _release_blas()


# --- BLAS: on one thread while tinydgl's threads run the products ---------------------------------------
_blas = None  # threadpoolctl's controller of NumPy's BLAS libraries, once looked up; False: none usable
_blas_saved = None  # their thread counts before tinydgl took them to 1; None: not taken


def _blas_controller():
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            controller = ThreadpoolController().select(user_api="blas")
            _blas = controller if controller.lib_controllers else False
        except Exception:  # not installed, or a platform it cannot inspect: leave BLAS alone
            _blas = False
    return _blas


def owns_products() -> bool:
    """True when tinydgl runs the matrix products on its own threads, BLAS on one thread: several threads
    and a BLAS that threadpoolctl controls. Taking BLAS to one thread happens here, on the first call."""
    global _blas_saved
    if num_threads() == 1:
        return False
    if _blas_saved is None:
        controller = _blas_controller()
        if not controller:
            return False
        with _pool_lock:
            if _blas_saved is None:
                _blas_saved = [lib.num_threads for lib in controller.lib_controllers]
                for lib in controller.lib_controllers:
                    lib.set_num_threads(1)
    return True


def _release_blas():
    global _blas_saved
    with _pool_lock:
        if _blas_saved is not None and _blas:
            for lib, count in zip(_blas.lib_controllers, _blas_saved):
                lib.set_num_threads(count)
        _blas_saved = None


def _get_pool(workers: int) -> ThreadPoolExecutor:
    """A pool with at least `workers` threads, kept for the life of the process (threads are reused)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="tinydgl")
            _pool_size = workers
        return _pool


def _forget_pool_after_fork():
    # A forked child has none of its parent's threads; it must start its own pool.
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def slices(n: int, parts: int) -> list[slice]:
    """range(n) cut into `parts` contiguous slices of (nearly) equal length, none empty."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


def threads_for(arrays, n: int) -> int:
    """How many threads to use on `arrays` (a tuple) whose first axis has n rows: 1 unless they are NumPy
    arrays, there are several threads, and every thread gets at least MIN_BYTES_PER_THREAD of them."""
    if n < 2 or not all(isinstance(a, np.ndarray) for a in arrays):
        return 1  # CuPy, array-API test arrays, scalars: one call
    nbytes = sum(a.nbytes for a in arrays)
    return max(1, min(num_threads(), n, nbytes // MIN_BYTES_PER_THREAD))


def run_slices(work, n: int, parts: int) -> None:
    """Call work(s) for `parts` contiguous slices s covering range(n), the first on this thread, the rest on
    the pool. Exceptions from any slice are raised here, after every slice has ended (they write into
    shared arrays, so none may still be running when the caller goes on)."""
    if parts <= 1:
        work(slice(0, n))
        return
    owns_products()  # several threads from now on: BLAS must not keep spinning on their cores
    pieces = slices(n, parts)
    futures = [_get_pool(parts - 1).submit(work, s) for s in pieces[1:]]
    error = None
    try:
        work(pieces[0])  # the calling thread takes the first slice instead of waiting
    except BaseException as err:
        error = err
    for future in futures:
        try:
            future.result()
        except BaseException as err:
            error = error or err
    if error is not None:
        raise error


def for_each_slice(work, *arrays) -> None:
    """Call `work(s)` for contiguous slices `s` of the first axis of `arrays` that together cover it, on as
    many threads as pay off (`threads_for`); `work(slice(0, n))` once on one thread. The slices are
    disjoint, so `work` may write its rows of a shared output."""
    n = arrays[0].shape[0]
    run_slices(work, n, threads_for(arrays, n))


def map_slices(fn, *arrays):
    """fn(s) for the rows in slice s of the first axis of `arrays`, for all rows: fn returns an array (or a
    tuple of arrays) whose first axis runs over those rows. For ops whose readable body allocates its own
    result.

    On one thread this is fn(slice(0, n)). On several, the rows go in fixed blocks (`row_blocks` of the
    first array, about MAP_BLOCK_BYTES each): the first block is computed here, which gives the results' shapes
    and types; new arrays (C order) for all rows are made, and the threads compute the other blocks, each
    block's result copied into its rows at once and dropped. So the extra memory is a block per thread, not
    a second copy of the result."""
    n = arrays[0].shape[0]
    if threads_for(arrays, n) == 1:
        return fn(slice(0, n))
    blocks = row_blocks(arrays[0], MAP_BLOCK_BYTES)
    first = fn(blocks[0])
    single = not isinstance(first, tuple)
    first = (first,) if single else first
    joined = tuple(np.empty((n, *a.shape[1:]), dtype=a.dtype) for a in first)
    for out, part in zip(joined, first):
        out[blocks[0]] = part

    def block(k):
        result = fn(blocks[k])
        for out, part in zip(joined, (result,) if single else result):
            out[blocks[k]] = part

    if len(blocks) > 1:
        run_slices(lambda s: [block(k) for k in range(s.start + 1, s.stop + 1)], len(blocks) - 1,
                   threads_for(arrays, n))
    return joined[0] if single else joined


def row_blocks(x, block_bytes=None) -> list[slice]:
    """Fixed blocks of the first axis of x, each about block_bytes (default BLOCK_BYTES) of x (>= 1 row)."""
    n = x.shape[0]
    row_bytes = max(1, x.nbytes // max(n, 1))
    step = max(1, (block_bytes or BLOCK_BYTES) // row_bytes)
    return [slice(a, min(a + step, n)) for a in range(0, n, step)]


def blocked_sums(partial, *arrays):
    """The sum over the fixed blocks b of the first axis of `arrays` (`row_blocks` of the first) of
    partial(b), added in block order, the blocks spread over the threads.

    The blocks do not depend on the thread count, so neither does the sum, to the last bit. partial(b)
    returns an array (all the same shape). For arrays that are not NumPy's it is partial(slice(0, n)).
    """
    if not is_numpy(*arrays):
        return partial(slice(0, arrays[0].shape[0]))
    return _sum_over_blocks(partial, row_blocks(arrays[0]), sum(a.nbytes for a in arrays), products=False)


def for_each_block(work, count: int, nbytes: int, products: bool = False) -> None:
    """work(k) for k in range(count), the blocks shared out over the threads in contiguous runs (a run of
    blocks per thread; `nbytes`, the data they touch, decides whether threads pay off). products=True: the
    blocks call BLAS, so they run on several threads only while tinydgl owns the products (BLAS on one
    thread, `owns_products`); otherwise one after the other, BLAS using its own threads inside each."""
    parts = max(1, min(num_threads(), count, nbytes // MIN_BYTES_PER_THREAD))
    if parts > 1 and products and not owns_products():
        parts = 1

    def run(s):
        for k in range(s.start, s.stop):
            work(k)

    run_slices(run, count, parts)


def matmul(a, b, out=None):
    """a @ b for a: (M, K) and b: (K, F), into `out` (M, F) if given (C-contiguous rows).

    On NumPy the rows of a go in fixed blocks (`row_blocks`) whatever the thread count, so each output row
    comes from the same BLAS call at any count; the blocks run on tinydgl's threads while it owns the
    products (`owns_products`), one after the other otherwise. Elsewhere: one call."""
    if not is_numpy(a, b):
        if out is None:
            return a @ b
        out[...] = a @ b
        return out
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    blocks = row_blocks(a)

    def block(k):
        np.matmul(a[blocks[k]], b, out=out[blocks[k]])

    for_each_block(block, len(blocks), a.nbytes + out.nbytes, products=True)
    return out


def _sum_over_blocks(block_sum, blocks, nbytes, products=True):
    """The sum over `blocks` of block_sum(block), added in block order (see `for_each_block` for where the
    blocks run)."""
    results = [None] * len(blocks)

    def block(k):
        results[k] = block_sum(blocks[k])

    for_each_block(block, len(blocks), nbytes, products=products)
    total = results[0]
    for part in results[1:]:
        total = total + part
    return total


def matmul_tn(a, b):
    """a.T @ b for a: (M, K) and b: (M, F): a sum over the M rows (a weight gradient).

    On NumPy the rows go in fixed blocks (`row_blocks` of a) whatever the thread count, and the blocks'
    products are added in block order, so the sum is the same to the last bit at any thread count.
    Elsewhere: one call."""
    if not is_numpy(a, b):
        return a.T @ b
    return _sum_over_blocks(lambda s: a[s].T @ b[s], row_blocks(a), a.nbytes + b.nbytes)


def column_sums(rows):
    """Sums over the first axis of rows: (M, K) -> (K,), as `ones @ rows` products (BLAS runs them several
    times faster than NumPy's sum over axis 0), in fixed blocks like `matmul_tn`."""
    if not is_numpy(rows):
        return array_namespace(rows).ones_like(rows[:, 0]) @ rows
    blocks = row_blocks(rows)
    ones = np.ones(blocks[0].stop - blocks[0].start, dtype=rows.dtype)
    return _sum_over_blocks(lambda s: ones[: s.stop - s.start] @ rows[s], blocks, rows.nbytes)


def is_numpy(*arrays) -> bool:
    """True when every array is a NumPy array: the fast paths that cut work into small blocks are for host
    arrays (on a GPU one large kernel beats many small ones)."""
    return all(isinstance(a, np.ndarray) for a in arrays)
