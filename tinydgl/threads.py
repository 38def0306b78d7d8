"""Elementwise and data-movement work on every core, for NumPy.

NumPy runs each loop on one core but releases the GIL inside it, so the batch is cut into contiguous
slices and the same NumPy code runs on each slice in a small pool of threads:

    from tinydgl.threads import for_each_slice
    out = np.empty_like(x)
    for_each_slice(lambda s: np.maximum(x[s], 0.0, out=out[s]), x, out)   # s: slices of x's first axis

One body per op, called once with slice(0, n) on one thread, on CuPy or for small work; reductions add
fixed-size row blocks in order, so results are the same to the last bit at any thread count. BLAS is kept
on one thread while tinydgl is imported (`blas_own_threads` gives it back); `set_num_threads(n)` or
TINYDGL_NUM_THREADS sets the count. Design notes (why, piece sizes, busy machines): docs/design/threads.md.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .backend import array_namespace, is_numpy_like

# Environment variables read, in order, for the thread count; the first one set wins.
THREAD_VARIABLES = ("TINYDGL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# No piece of split work touches fewer bytes than this, so work under twice this runs on the calling thread
# (docs/design/threads.md says how it was chosen: benchmarks/bench_threads.py --calibrate).
MIN_PIECE_BYTES = 256 * 1024

# Split work is cut into at most this many pieces per thread: a helper that loses its core in the middle
# of a piece then holds back only a small part of the work, and pieces stay large enough that taking one
# (a lock, a Python call) costs little beside the work in it.
PIECES_PER_THREAD = 4

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
    """The number of threads tinydgl's NumPy ops use (where it comes from: docs/design/threads.md)."""
    return _setting if _setting is not None else _from_environment()


def set_num_threads(n: int | None) -> None:
    """Use `n` threads for tinydgl's work (None: follow the environment again).

    BLAS stays on one thread at any count (docs/design/threads.md); `blas_own_threads` gives it its own
    count back for a block of your own code.
    """
    global _setting
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"set_num_threads expects a whole number >= 1 (or None), got {n!r}.")
    _setting = n


# --- BLAS: on one thread while tinydgl is imported -------------------------------------------------------
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


def _hold_blas() -> None:
    """Take NumPy's BLAS to one thread, remembering its counts (done once, at import)."""
    global _blas_saved
    controller = _blas_controller()
    with _pool_lock:
        if controller and _blas_saved is None:
            _blas_saved = [lib.num_threads for lib in controller.lib_controllers]
            for lib in controller.lib_controllers:
                lib.set_num_threads(1)


def _release_blas() -> None:
    """Give BLAS back the counts `_hold_blas` took."""
    global _blas_saved
    with _pool_lock:
        if _blas_saved is not None and _blas:
            for lib, count in zip(_blas.lib_controllers, _blas_saved):
                lib.set_num_threads(count)
        _blas_saved = None


def owns_products() -> bool:
    """True when BLAS is on one thread (held by tinydgl), so tinydgl's threads may run products side by side."""
    return _blas_saved is not None


@contextmanager
def blas_own_threads():
    """Inside the `with` block BLAS has its own thread count back, for products of your own (a reference
    timing, say); on leaving, BLAS is on one thread again. tinydgl's ops run inside it give the right
    numbers, but not always the same last bits as outside it."""
    held = owns_products()
    _release_blas()
    try:
        yield
    finally:
        if held:
            _hold_blas()


_hold_blas()


# --- the pool and how work is shared ---------------------------------------------------------------------
def _get_pool(workers: int) -> ThreadPoolExecutor:
    """A pool with at least `workers` threads, kept for the life of the process (threads are reused; idle
    ones block on the pool's queue, using no CPU)."""
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


class _Pieces:
    """work(k) for k in range(count), each k taken by exactly one of the threads that call `take`."""

    def __init__(self, work, count):
        self.work, self.count = work, count
        self.taken = self.ended = 0
        self.error = None
        self.lock = threading.Lock()
        self.all_ended = threading.Condition(self.lock)

    def take(self):
        """Run the next piece nobody has taken, until none is left. A piece's error is kept for the caller."""
        while True:
            with self.lock:
                k = self.taken
                if k >= self.count:
                    return
                self.taken += 1
            error = None
            try:
                self.work(k)
            except BaseException as err:
                error = err
            with self.lock:
                if self.error is None:
                    self.error = error
                self.ended += 1
                if self.ended == self.count:
                    self.all_ended.notify_all()

    def wait_until_all_ended(self):
        with self.lock:
            while self.ended < self.count:
                self.all_ended.wait()  # blocks: no spinning


def run_pieces(work, count: int, threads: int) -> None:
    """work(k) for every k in range(count), on this thread and up to threads - 1 helpers of the pool.

    Each thread takes the next piece nobody has taken. The calling thread takes pieces too and does not
    wait for a helper that has not started (on a busy machine it may get no core for milliseconds): it
    waits only for pieces a helper has begun. Errors from any piece are raised here, after every piece has
    ended (the pieces write into shared arrays, so none may still be running when the caller goes on)."""
    if threads <= 1 or count <= 1:
        for k in range(count):
            work(k)
        return
    pieces = _Pieces(work, count)
    helpers = min(threads, count) - 1
    pool = _get_pool(helpers)
    for _ in range(helpers):
        pool.submit(pieces.take)
    pieces.take()
    pieces.wait_until_all_ended()
    if pieces.error is not None:
        raise pieces.error


def slices(n: int, parts: int) -> list[slice]:
    """range(n) cut into `parts` contiguous slices of (nearly) equal length, none empty."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


def piece_count(arrays, n: int) -> int:
    """How many pieces to cut the first axis (n rows) of `arrays` (a tuple) into: 1 unless they are NumPy
    arrays, there are several threads, and they touch at least 2 * MIN_PIECE_BYTES; then as many as fit
    MIN_PIECE_BYTES, at most PIECES_PER_THREAD per thread and one per row."""
    threads = num_threads()
    if threads == 1 or n < 2 or not all(isinstance(a, np.ndarray) for a in arrays):
        return 1  # CuPy, array-API test arrays, scalars: one call
    nbytes = sum(a.nbytes for a in arrays)
    return max(1, min(n, threads * PIECES_PER_THREAD, nbytes // MIN_PIECE_BYTES))


def for_each_slice(work, *arrays) -> None:
    """Call `work(s)` for the contiguous slices `s` = slices(n, piece_count(arrays, n)) of the first axis of
    `arrays`, which together cover it, on up to num_threads() threads; `work(slice(0, n))` once when the
    work is small or there is one thread. The slices are disjoint, so `work` may write its rows of a shared
    output."""
    n = arrays[0].shape[0]
    count = piece_count(arrays, n)
    if count == 1:
        work(slice(0, n))
        return
    pieces = slices(n, count)
    run_pieces(lambda k: work(pieces[k]), count, num_threads())


def map_slices(fn, *arrays):
    """fn(s) for the rows in slice s of the first axis of `arrays`, for all rows: fn returns an array (or a
    tuple of arrays) whose first axis runs over those rows. For ops whose readable body allocates its own
    result.

    When the work is small or there is one thread, this is fn(slice(0, n)). Else the rows go in fixed blocks
    (`row_blocks` of the first array, about MAP_BLOCK_BYTES each): the first block is computed here, which
    gives the results' shapes and types; new arrays (C order) for all rows are made, and the threads take
    the other blocks, each block's result copied into its rows at once and dropped. So the extra memory is
    a block per thread, not a second copy of the result."""
    n = arrays[0].shape[0]
    if piece_count(arrays, n) == 1:
        return fn(slice(0, n))
    blocks = row_blocks(arrays[0], MAP_BLOCK_BYTES)
    first = fn(blocks[0])
    single = not isinstance(first, tuple)
    first = (first,) if single else first
    joined = tuple(np.empty((n, *a.shape[1:]), dtype=a.dtype) for a in first)
    for out, part in zip(joined, first):
        out[blocks[0]] = part

    def block(k):
        result = fn(blocks[k + 1])
        for out, part in zip(joined, (result,) if single else result):
            out[blocks[k + 1]] = part

    run_pieces(block, len(blocks) - 1, num_threads())
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
    """work(k) for k in range(count): fixed blocks, taken one at a time by the threads (`run_pieces`);
    `nbytes`, the data they touch, decides whether threads pay off (`MIN_PIECE_BYTES`). products=True: the
    blocks call BLAS, so they run on several threads only while BLAS is on one (`owns_products`);
    otherwise one after the other, BLAS using its own threads inside each."""
    threads = num_threads() if nbytes >= 2 * MIN_PIECE_BYTES else 1
    if threads > 1 and products and not owns_products():
        threads = 1
    run_pieces(work, count, threads)


def matmul(a, b, out=None):
    """a @ b for a: (M, K) and b: (K, F), into `out` (M, F) if given (C-contiguous rows).

    On NumPy the rows of a go in fixed blocks (`row_blocks`) whatever the thread count, so each output row
    comes from the same BLAS call at any count; the blocks run on tinydgl's threads while it owns the
    products (`owns_products`), one after the other otherwise. Elsewhere: one call."""
    if not is_numpy(a, b):
        if out is None:
            return a @ b
        xp = array_namespace(a)
        if is_numpy_like(xp):  # CuPy: one launch (out[...] = a @ b is two); the array API has no out=
            return xp.matmul(a, b, out=out)
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
    if not is_numpy(rows):  # on a GPU one reduction kernel (`ones @ rows` would be two launches)
        return array_namespace(rows).sum(rows, axis=0)
    blocks = row_blocks(rows)
    ones = np.ones(blocks[0].stop - blocks[0].start, dtype=rows.dtype)
    return _sum_over_blocks(lambda s: ones[: s.stop - s.start] @ rows[s], blocks, rows.nbytes)


def is_numpy(*arrays) -> bool:
    """True when every array is a NumPy array: the fast paths that cut work into small blocks are for host
    arrays (on a GPU one large kernel beats many small ones)."""
    return all(isinstance(a, np.ndarray) for a in arrays)
