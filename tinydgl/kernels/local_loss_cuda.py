"""The LLS family's local loss in one CUDA launch, written in Python with numba-cuda (`@cuda.jit`).

What one launch computes, for a block output `a` (N, C, H, W) (a flat (N, D) output is C = D, H = W = 1, p = 1):

    v      = adaptive_avg_pool(a, p) flattened          (N, d),  d = C * p * p   (PyTorch's windows)
    z      = v / max(||v||, eps)   (or z = v when normalize is False: the "random" basis, local-losses)
    logits = scale * z @ W                              (N, K),  scale = 1 / temperature
    loss_n = cross_entropy(logits_n, y_n)               with optional label smoothing
    dlogits= (softmax(logits) - target) / N
    da     = d(mean loss) / da                          (N, C, H, W), back through the projection, the
                                                        normalisation and the pooling

**The projection is a parameter, an ordinary (d, K) matrix W.** Every variant is a different W, so no
variant needs a kernel of its own:

    LLS            W = B.T                   (B: the fixed basis, n_classes x d)
    LLS-M          W = B.T * m               (m: the learned per-class scale)
    LLS-MxM        W = B.T @ M               (M: the learned R x n_classes mixer; R < n_classes is "reduced")
    local-losses   W = (weight @ pool).T     (a learned matrix, column-pooled; normalize=False)

A new variant plugs in the same way: give `tinydgl.kernels.local_loss` a head whose projection is a chain
of bias-free linear layers and W is that chain applied to the identity (see `tinydgl.kernels`). The
learned parameters' gradients follow from the kernel's outputs without another kernel: logits are linear
in W, so dL/dW = scale * z.T @ dlogits, one (d, N) @ (N, K) matmul, and the chain's own backward turns
dL/dW into dm, dM or dweight.

How the work is split: **one thread block per example** (the grid is N blocks), THREADS threads each.
Everything one example needs (its window sums, its norm, its K logits) stays inside its block, so the
only synchronisation is `cuda.syncthreads()` between phases, and sums over d (the norm, each logit, the
radial part of the normalisation's gradient) are **tree reductions in shared memory** (`block_sum`).
The K logits and the softmax are done by thread 0 alone: K is 10 or 100, far less work than a reduction's
round trip, and a serial loop is easier to read.

What a faster version would change (to be measured on a GPU first, so not done here): in phase 1 the
threads of a block read different pooling windows, so neighbouring threads do not read neighbouring
addresses (the reads are not *coalesced*); sweeping the block output row by row and adding into a shared
array of window sums would be. One block per example also leaves a large GPU half idle when N is small.

Status: the kernel is tested against a float64 NumPy reference under numba's CUDA simulator
(tests/test_kernels_cudasim.py) and compiled to PTX for sm_80 and sm_90 when NVRTC is present
(tests/test_kernels_ptx.py). **It has not yet run on a real GPU**: its speed is unmeasured and the
CuPy-stream interplay (`launch`) is untested on hardware.
"""

import functools
import math

from numba import cuda, float64  # this module is imported only where the fused path runs

THREADS = 128  # threads per block: a power of two (the tree reduction halves it), a multiple of the 32-wide warp


# The kernel's phases, one device function each, in the order the kernel runs them. Each is run by every
# thread of example n's block; t = cuda.threadIdx.x, and "for f in range(t, d, threads)" is a block-stride
# loop: thread t takes features t, t + threads, ..., so any d works with any number of threads. A phase
# that reduces over d calls block_sum, whose barriers every thread of the block must reach.


@cuda.jit(device=True, inline="always")
def block_sum(partial, buffer, threads):
    """Every thread passes its partial sum; every thread gets the block's total.

    A tree reduction: in round s, thread t < s adds buffer[t + s] into buffer[t], halving the live part
    each round, so `threads` partial sums become one in log2(threads) rounds. The syncthreads between
    rounds make each round's writes visible before the next reads them.
    """
    t = cuda.threadIdx.x
    buffer[t] = partial
    cuda.syncthreads()
    s = threads // 2
    while s > 0:
        if t < s:
            buffer[t] += buffer[t + s]
        cuda.syncthreads()
        s //= 2
    total = buffer[0]
    cuda.syncthreads()  # everyone has read buffer[0] before the buffer is reused
    return total


@cuda.jit(device=True, inline="always")
def adaptive_window(i, size, p):
    """PyTorch's adaptive window i of p over `size`: [floor(i*size/p), ceil((i+1)*size/p))."""
    return (i * size) // p, ((i + 1) * size + p - 1) // p


@cuda.jit(device=True, inline="always")
def pool(a, n, p, z, threads):
    """1. z[n, f] = the mean of feature f's window of a[n] (C, H, W); returns this thread's sum of squares."""
    t = cuda.threadIdx.x
    height, width, d = a.shape[2], a.shape[3], z.shape[1]
    squares = 0.0
    for f in range(t, d, threads):
        c, i, j = f // (p * p), (f // p) % p, f % p
        h0, h1 = adaptive_window(i, height, p)
        w0, w1 = adaptive_window(j, width, p)
        total = 0.0
        for h in range(h0, h1):
            for x in range(w0, w1):
                total += a[n, c, h, x]
        v = total / ((h1 - h0) * (w1 - w0))
        z[n, f] = v
        squares += v * v
    return squares


@cuda.jit(device=True, inline="always")
def normalise(z, n, squares, normalize, eps, buffer, threads):
    """2. z[n] /= max(||v||, eps) (or by 1 without normalisation); returns (||v||, the divisor)."""
    t = cuda.threadIdx.x
    norm = math.sqrt(block_sum(squares, buffer, threads))  # a reduction over all d features of the block
    denom = max(norm, eps) if normalize else 1.0
    for f in range(t, z.shape[1], threads):
        z[n, f] = z[n, f] / denom
    # no barrier needed here: until phase 6 each thread reads only the features f it wrote itself (the
    # reductions' own barriers share the sums)
    return norm, denom


@cuda.jit(device=True, inline="always")
def project(z, w, n, scale, logits, buffer, threads):
    """3. logits[n, k] = scale * <z[n], w[:, k]>: a dot product over d, one reduction per class."""
    t = cuda.threadIdx.x
    d, classes = w.shape
    for k in range(classes):
        partial = 0.0
        for f in range(t, d, threads):
            partial += z[n, f] * w[f, k]
        dot = block_sum(partial, buffer, threads)
        if t == 0:
            logits[n, k] = scale * dot


@cuda.jit(device=True, inline="always")
def softmax_cross_entropy(logits, y, n, smoothing, dlogits, loss):
    """4. loss[n] and dlogits[n] = (softmax - target) / N, by one thread (K is small); the max is
    subtracted first so exp cannot overflow."""
    n_examples, classes = logits.shape
    top = logits[n, 0]
    for k in range(1, classes):
        top = max(top, logits[n, k])
    sum_exp = 0.0
    for k in range(classes):
        sum_exp += math.exp(logits[n, k] - top)
    log_sum = top + math.log(sum_exp)
    label = y[n]
    row_loss = 0.0
    for k in range(classes):
        target = smoothing / classes + (1.0 - smoothing if k == label else 0.0)
        row_loss -= target * (logits[n, k] - log_sum)
        dlogits[n, k] = (math.exp(logits[n, k] - log_sum) - target) / n_examples
    loss[n] = row_loss


@cuda.jit(device=True, inline="always")
def back_through_projection(z, w, dlogits, n, scale, normalize, eps, norm, denom, dv, buffer, threads):
    """5. dv[n] = dL/dv: dz_f = scale * sum_k w[f, k] dlogits_k, then, with normalisation,
    dv = (dz - z <dz, z>) / ||v||, which needs one more reduction for <dz, z>."""
    t = cuda.threadIdx.x
    d, classes = w.shape
    radial_part = 0.0
    for f in range(t, d, threads):
        dz = 0.0
        for k in range(classes):
            dz += w[f, k] * dlogits[n, k]
        dz *= scale
        dv[n, f] = dz
        radial_part += dz * z[n, f]
    # the condition is the same for every thread of the block, so all of them reach block_sum's barriers
    radial = block_sum(radial_part, buffer, threads) if normalize and norm > eps else 0.0
    for f in range(t, d, threads):
        dv[n, f] = (dv[n, f] - z[n, f] * radial) / denom


@cuda.jit(device=True, inline="always")
def unpool(dv, n, p, da, threads):
    """6. da[n] = dL/da: each input pixel collects 1/area of the gradient of every window that holds it
    (adaptive windows can overlap, so a pixel may lie in two)."""
    t = cuda.threadIdx.x
    channels, height, width = da.shape[1], da.shape[2], da.shape[3]
    for e in range(t, channels * height * width, threads):
        c, h, x = e // (height * width), (e // width) % height, e % width
        grad = 0.0
        for i in range(p):
            h0, h1 = adaptive_window(i, height, p)
            if h0 <= h < h1:
                for j in range(p):
                    w0, w1 = adaptive_window(j, width, p)
                    if w0 <= x < w1:
                        grad += dv[n, c * p * p + i * p + j] / ((h1 - h0) * (w1 - w0))
        da[n, c, h, x] = grad


@functools.lru_cache(maxsize=None)
def make_kernel(threads=THREADS):
    """The `@cuda.jit` kernel with `threads` threads per block (a power of two).

    A factory, because a shared-memory array needs its size at compile time. numba then compiles the kernel
    once per dtype of the arrays it is given (float32 on a GPU, float64 in the tests). Sums are carried in
    float64 (the Python floats in the code) whatever the arrays' dtype: more accurate than CuPy's float32
    sums, and cheap here, since the kernel reads far more memory than it computes.
    `cuda` is a module global on purpose: numba's simulator swaps the globals named `cuda` of a kernel.
    """
    if threads < 1 or threads & (threads - 1):
        raise ValueError(f"threads per block must be a power of two, got {threads}.")

    @cuda.jit
    def local_loss_kernel(a, y, w, scale, p, normalize, eps, smoothing, z, dv, logits, dlogits, loss, da):
        """One block per example n = blockIdx.x. a: (N, C, H, W), y: (N,) ints, w: (d, K).
        Writes z (N, d), dv (N, d) scratch, logits (N, K), dlogits (N, K), loss (N,), da (N, C, H, W)."""
        n = cuda.blockIdx.x
        buffer = cuda.shared.array(threads, dtype=float64)  # one slot per thread, for block_sum
        squares = pool(a, n, p, z, threads)
        norm, denom = normalise(z, n, squares, normalize, eps, buffer, threads)
        project(z, w, n, scale, logits, buffer, threads)
        if cuda.threadIdx.x == 0:
            softmax_cross_entropy(logits, y, n, smoothing, dlogits, loss)
        cuda.syncthreads()  # dlogits[n, :] written before every thread uses it
        back_through_projection(z, w, dlogits, n, scale, normalize, eps, norm, denom, dv, buffer, threads)
        cuda.syncthreads()  # dv[n, :] complete before the un-pooling reads it
        unpool(dv, n, p, da, threads)

    return local_loss_kernel


def _stream_for(xp):
    """The stream to launch on: CuPy's current stream for CuPy arrays (so the kernel is ordered with the
    CuPy ops around it), numba's default stream otherwise (NumPy arrays in the simulator)."""
    if getattr(xp, "__name__", "") == "cupy":
        ptr = xp.cuda.get_current_stream().ptr
        return cuda.external_stream(ptr) if ptr else cuda.default_stream()
    return cuda.default_stream()


def device_arrays(xp, *arrays):
    """What the kernel is given: for CuPy arrays, numba views of the same memory, made **without** the host
    synchronisation numba does by default when an array names its stream (`sync=False`): the kernel runs on
    CuPy's current stream, after whatever wrote the arrays, so waiting on the host would only cost time.
    NumPy arrays (the simulator) are passed as they are."""
    if getattr(xp, "__name__", "") != "cupy":
        return arrays
    return tuple(cuda.as_cuda_array(x, sync=False) for x in arrays)


def launch(a, y, w, scale, pool, normalize, label_smoothing=0.0, eps=1e-12, threads=THREADS):
    """Run the kernel once; returns (loss_rows (N,), da (a's shape), z (N, d), dlogits (N, K), logits (N, K)).

    a: (N, C, H, W) or (N, D) block output; y: (N,) integer labels; w: (d, K) projection, d = C * pool**2
    (or D). All arrays from one library: CuPy arrays on a GPU (passed to numba through
    `__cuda_array_interface__`: no copy, no host sync, see `device_arrays`), or NumPy arrays in numba's simulator (NUMBA_ENABLE_CUDASIM=1),
    which is how CI tests it. Outputs are allocated with the same library.
    """
    from ..backend import array_namespace

    xp = array_namespace(a, w)
    flat = a.ndim == 2
    a4 = xp.reshape(a, (a.shape[0], a.shape[1], 1, 1)) if flat else a
    p = 1 if flat else int(pool)
    n, channels = a4.shape[0], a4.shape[1]
    d, classes = w.shape
    if d != channels * p * p:
        raise ValueError(
            f"the projection has {d} rows but the pooled block output has {channels} x {p} x {p} = "
            f"{channels * p * p} features; build W as (d, n_classes)."
        )
    if a4.dtype != w.dtype:
        raise TypeError(f"the block output is {a4.dtype} but the projection is {w.dtype}; use one dtype.")
    kernel = make_kernel(threads)
    z, dv = xp.empty((n, d), dtype=a4.dtype), xp.empty((n, d), dtype=a4.dtype)
    logits, dlogits = xp.empty((n, classes), dtype=a4.dtype), xp.empty((n, classes), dtype=a4.dtype)
    loss, da = xp.empty((n,), dtype=a4.dtype), xp.empty(a4.shape, dtype=a4.dtype)
    labels = xp.astype(y, xp.int64) if y.dtype != xp.int64 else y
    stream = _stream_for(xp)
    a_, labels_, w_, z_, dv_, logits_, dlogits_, loss_, da_ = device_arrays(
        xp, a4, labels, w, z, dv, logits, dlogits, loss, da
    )
    kernel[n, threads, stream](
        a_,
        labels_,
        w_,
        float(scale),
        p,
        bool(normalize),
        float(eps),
        float(label_smoothing),
        z_,
        dv_,
        logits_,
        dlogits_,
        loss_,
        da_,
    )
    return loss, (xp.reshape(da, a.shape) if flat else da), z, dlogits, logits
