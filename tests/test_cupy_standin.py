"""tinydgl's CuPy route, on the CPU: every trainer on every model, the command line, the host syncs per step,
the device switch and the MPI ranks' GPUs, all through the CuPy stand-in of tests/cupy_standin/.

No GPU has been lent to this project. The stand-in is `cupy` as a real `import cupy` of CuPy 14.2.0 exports
it (names, signatures, ufunc keywords: tests/cupy_standin/manifest.json), computing with NumPy underneath;
its arrays refuse to become NumPy arrays implicitly, as CuPy's do. The first tests check the stand-in itself,
so that the later ones mean something.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinydgl
from cupy_standin import MANIFEST_PATH, STATS, standin_cupy, subprocess_env
from tinydgl import functional as F
from tinydgl.backend import arange_like, asarray, to_numpy, zeros_like_on
from tinydgl.models import MODELS, build_model
from tinydgl.optim import Adam
from tinydgl.trainers import TRAINERS, build_trainer

ROOT = Path(__file__).resolve().parent.parent
CONV_ONLY = {
    "ff": ["mlp"],
    "pepita": ["mlp"],
}  # ff trains a fully connected network of its own: it takes --model mlp only
# pepita follows the official fully connected code: Linear -> activation blocks, no batch norm
MODEL_OPTIONS = {"pepita": {"batchnorm": False}}


@pytest.fixture
def cupy():
    with standin_cupy() as module:
        tinydgl.set_backend("cupy")
        yield module


# --- the stand-in is CuPy-shaped ------------------------------------------------------------------------------
def test_standin_refuses_what_cupy_refuses(cupy):
    x = cupy.asarray(np.arange(6.0).reshape(2, 3))
    assert not isinstance(x, np.ndarray) and type(x).__module__ == "cupy"
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Unsupported type"):
        x + np.ones(3)  # a NumPy array mixed into device arithmetic
    with pytest.raises(TypeError, match="Unsupported type"):
        cupy.maximum(x, np.zeros(3))
    with pytest.raises(TypeError, match="writeable"):  # NumPy's keyword; CuPy's as_strided is (x, shape, strides)
        cupy.lib.stride_tricks.as_strided(x, shape=(2,), strides=(8,), writeable=False)
    with pytest.raises(TypeError, match="Wrong arguments"):  # CuPy's ufuncs take out, dtype, casting only
        cupy.add(x, 1, where=x > 0)
    with pytest.raises(TypeError, match="kwargs"):  # NumPy's einsum takes out=, CuPy's does not
        cupy.einsum("ij->j", x, out=cupy.zeros(3))
    recorded = json.loads(MANIFEST_PATH.read_text())["modules"]["cupy"]
    numpy_only = sorted(n for n in dir(np) if not n.startswith("_") and n not in recorded)
    assert numpy_only and not any(hasattr(cupy, n) for n in numpy_only)  # e.g. cupy.trapezoid does not exist
    assert cupy.__version__ == "14.2.0" and cupy.cuda.runtime.getDeviceCount() == 1
    ndarray_attributes = json.loads(MANIFEST_PATH.read_text())["ndarray"]
    assert all(a in ndarray_attributes for a in dir(cupy.ndarray) if not a.startswith("_"))
    with pytest.raises(AttributeError):
        x.to_device  # NumPy 2's array-API method: CuPy 14's ndarray has none


def test_standin_counts_syncs_and_copies_with_their_call_site(cupy):
    STATS.reset()
    x = cupy.asarray(np.arange(4.0))  # one host -> device copy
    total = x.sum()  # stays on the device
    assert STATS.total_syncs() == 0
    float(total), x.get(), cupy.asnumpy(x), bool(total > 0)
    assert STATS.total_syncs() == 4 and STATS.total_uploads() == 1
    sites = {site for (_, site) in STATS.syncs}
    assert all(site.startswith(__file__) for site in sites), sites


def test_standin_counts_kernel_launches_and_not_views(cupy):
    """What benchmarks/count_launches.py counts: elementwise ops, reductions, matmuls, fills and device
    copies are one launch each; views, `empty` and host copies are none."""
    x = cupy.asarray(np.arange(6.0).reshape(2, 3))
    STATS.reset()
    x.T, x[0], x.reshape(3, 2), cupy.empty((4,)), cupy.lib.stride_tricks.as_strided(x, (2,), (8,))
    assert STATS.total_launches() == 0, STATS.launches
    y = x + 1  # 1
    y *= 2  # 2
    cupy.exp(y), y.sum(), x @ x.T, cupy.zeros((3,)), x[cupy.asarray(np.array([1, 0]))], y.astype(np.float32)  # 8
    y[0] = 0.0  # 9: a fill
    assert STATS.total_launches() == 9, STATS.launches
    assert all(site.startswith(__file__) for (_, site) in STATS.launches), STATS.launches


def test_manifest_is_what_the_installed_cupy_exports():
    """The committed manifest matches a fresh recording where the pinned CuPy is installed (it needs no GPU)."""
    real = pytest.importorskip("cupy")
    if hasattr(real, "__cupy_standin__"):
        pytest.skip("`cupy` is the stand-in in this process (its shim is on PYTHONPATH)")
    recorded = json.loads(MANIFEST_PATH.read_text())
    if real.__version__ != recorded["cupy_version"]:
        pytest.skip(f"CuPy {real.__version__} is installed; the manifest is of {recorded['cupy_version']}")
    sys.path.insert(0, str(MANIFEST_PATH.parent))
    try:
        import record_manifest
    finally:
        sys.path.pop(0)

    def same(a, b):  # as JSON text: NaN constants (cupy.nan) compare equal there
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    assert same(record_manifest.record_module("cupy"), recorded["modules"]["cupy"])
    assert same(record_manifest.record_class(real.ndarray), recorded["ndarray"])
    assert record_manifest.ufunc_keywords() == recorded["ufunc_keywords"]


# --- the fixes ------------------------------------------------------------------------------------------------
def test_conv_runs_on_cupy(cupy):
    """im2col's strided window view: CuPy's as_strided has no `writeable` keyword (it raised TypeError)."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    out, _ = F.conv2d_forward(asarray(x), asarray(w), None, 1, 1)
    np.testing.assert_allclose(to_numpy(out), F.conv2d_forward(x, w, None, 1, 1)[0], rtol=1e-12)


def test_set_backend_device_makes_it_current():
    """Every array made after set_backend('cupy', device=1) lives on GPU 1, not only those from `asarray`
    (CuPy allocates on the current device; the stand-in refuses to compute across devices, as CuPy does
    without peer access), and a model trains there."""
    with standin_cupy(devices=2):
        tinydgl.set_backend("cupy", device=1)
        x = asarray(np.ones((2, 3)))
        assert x.device.id == 1
        assert zeros_like_on(x, (4,)).device.id == 1 and arange_like(x, 3).device.id == 1
        model = build_model("smallconv", 1, 8, 10, seed=0, dtype="float32")
        trainer = build_trainer("bp", model, lambda p: Adam(p, lr=1e-3))
        data = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
        trainer.train_step(asarray(data), asarray(np.arange(4)))
        assert all(p.data.device.id == 1 for p in model.parameters())
        with tinydgl.use_backend("cupy", 0):
            assert asarray(np.ones(1)).device.id == 0
        assert zeros_like_on(x, (1,)).device.id == 1, "use_backend puts the previous device back"
        with pytest.raises(ValueError, match="GPU 2 does not exist: CUDA sees 2"):
            tinydgl.set_backend("cupy", device=2)


class _NodeComm:
    """The part of an mpi4py communicator `choose_rank_gpu` uses: rank `rank` of `size`, all on one machine."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Split_type(self, split_type, key=0):
        return self

    def Free(self):
        pass

    def allgather(self, value):
        return [value] * self.size


@pytest.mark.parametrize("rank, gpu", [(0, 0), (1, 1), (2, 0)])
def test_mpi_ranks_spread_over_the_gpus_of_their_machine(rank, gpu):
    pytest.importorskip("mpi4py")
    from tinydgl.runtime.mpi_engine import choose_rank_gpu

    with standin_cupy(devices=2):
        message = choose_rank_gpu(_NodeComm(rank, 3))
        assert tinydgl.get_backend().device.id == gpu and asarray(np.ones(1)).device.id == gpu
    assert f"GPU {gpu}" in message and "local rank % 2" in message and "share" in message


# --- every trainer, every model -------------------------------------------------------------------------------
SMALL_MODELS = ["mlp", "cnn", "smallconv"]
LARGE_MODELS = {"smallconvl": 8, "vgg8": 8, "mobilenet_v1": 8, "dni_cnn": 27}  # model: the smallest image it takes


def _models(name, models):
    return [m for m in models if m in CONV_ONLY.get(name, models)]


def _step_and_predict(name, model_name, size, n, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, size, size)).astype(dtype)
    y = np.arange(n) % 10
    model = build_model(model_name, 1, size, 10, seed=0, dtype=dtype, **MODEL_OPTIONS.get(name, {}))
    trainer = build_trainer(name, model, lambda p: Adam(p, lr=1e-3))
    loss = float(trainer.train_step(asarray(x), asarray(y)))  # a device scalar: read it here
    return loss, trainer.predict(asarray(x)), model


def test_the_large_models_are_in_the_slow_test():
    assert set(SMALL_MODELS) | set(LARGE_MODELS) == set(MODELS), "every model is trained on the stand-in"


@pytest.mark.parametrize("name", list(TRAINERS))
def test_every_trainer_trains_the_small_models_on_cupy_as_on_numpy(name):
    """One step of `name` on mlp, cnn and smallconv (12x12 images, batch 8, float64), on the stand-in and
    on NumPy: the same loss and predictions, and every parameter stays a device array."""
    for model_name in _models(name, SMALL_MODELS):
        with standin_cupy():
            tinydgl.set_backend("cupy")
            loss, logits, model = _step_and_predict(name, model_name, 12, 8, "float64")
            assert all(type(p.data).__module__ == "cupy" for p in model.parameters()), model_name
            logits = to_numpy(logits)
        with tinydgl.use_backend("numpy"):
            want_loss, want_logits, _ = _step_and_predict(name, model_name, 12, 8, "float64")
        assert np.isfinite(loss) and loss == pytest.approx(want_loss, rel=1e-9), model_name
        np.testing.assert_allclose(logits, want_logits, rtol=1e-7, atol=1e-9, err_msg=model_name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in TRAINERS if _models(n, list(LARGE_MODELS))])
def test_every_trainer_trains_the_large_models_on_cupy(name):
    """One step of `name` on smallconvl, vgg8, mobilenet_v1 and dni_cnn on the stand-in (the smallest images
    each takes, batch 2): it runs, its loss is finite, its parameters stay device arrays. (No NumPy run beside
    it: these models cost seconds a step even so; their layers are compared with NumPy's in
    test_portability.py.)"""
    for model_name, size in LARGE_MODELS.items():
        with standin_cupy():
            tinydgl.set_backend("cupy")
            loss, logits, model = _step_and_predict(name, model_name, size, 2, "float32")
            assert np.isfinite(loss) and logits.shape == (2, 10), model_name
            assert all(type(p.data).__module__ == "cupy" for p in model.parameters()), model_name


# Host syncs (float(), .item(), .get(), bool() of a device value) a trainer may make in one train_step. A sync
# makes the host wait until the GPU has finished everything queued, so one per step (say, labels read back to
# draw negatives, as ff once did) stalls the GPU on every batch. Losses are float64 scalars on the device
# (`F.float64_scalar`), which the training loop reads many steps at a time (`test_the_loop_reads_losses_...`),
# so a step needs none. Measured on the stand-in (smallconv: 4 blocks; mlp for ff and pepita), at defaults.
# Before: dgl 4, the lls family and local-losses 5, dni and cdni 5 (a float() per loss), ff 7 (and its
# peer-normalisation penalty per layer), async-dgl one per module update.
SYNCS_PER_STEP = {name: 0 for name in TRAINERS}


@pytest.mark.parametrize("name", list(TRAINERS))
def test_host_syncs_per_step(name):
    model_name = "mlp" if name in ("ff", "pepita") else "smallconv"
    with standin_cupy():
        tinydgl.set_backend("cupy")
        rng = np.random.default_rng(0)
        model = build_model(model_name, 1, 12, 10, seed=0, dtype="float32", **MODEL_OPTIONS.get(name, {}))
        trainer = build_trainer(name, model, lambda p: Adam(p, lr=1e-3))
        x = asarray(rng.standard_normal((8, 1, 12, 12)).astype(np.float32))
        y = asarray(np.arange(8) % 10)
        trainer.train_step(x, y)  # the first step builds optimizer state, buffers, ...
        STATS.reset()
        loss = trainer.train_step(x, y)
        syncs = STATS.total_syncs()
        where = "\n".join(f"  {n} x {what} at {site}" for (what, site), n in STATS.syncs.most_common())
        assert type(loss).__module__ == "cupy" and loss.ndim == 0, f"{name}: the loss left the device"
    budget = SYNCS_PER_STEP[name]
    assert syncs <= budget, f"{name}: {syncs} host syncs in one step (budget {budget}):\n{where}"


def test_the_vq_codec_restarts_codewords_without_a_host_sync():
    """async-dgl with VQ-compressed buffers: once each codec is initialised, a step reads nothing back (before:
    a float() of the `initialised` flag and a bool() of any(dead) per codec update)."""
    with standin_cupy():
        tinydgl.set_backend("cupy")
        model = build_model("smallconv", 1, 12, 10, seed=0, dtype="float32")
        trainer = build_trainer("async-dgl", model, lambda p: Adam(p, lr=1e-3), buffer_codec="vq")
        x = asarray(np.random.default_rng(0).standard_normal((8, 1, 12, 12)).astype(np.float32))
        y = asarray(np.arange(8) % 10)
        for _ in range(3):  # the schedule reaches every module's codec in these
            trainer.train_step(x, y)
        STATS.reset()
        trainer.train_step(x, y)
        assert STATS.total_syncs() == 0, STATS.syncs


def test_the_loop_reads_losses_once_per_interval(monkeypatch):
    """The training loop reads the device losses of LOSS_READ_EVERY steps in one transfer: 12 steps, read every
    4, are 3 syncs (before: one per step, in the loss itself), and the epoch's numbers are those of NumPy."""
    from tinydgl.data import DataLoader
    from tinydgl.train import FitConfig, batches

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((48, 1, 12, 12)).astype(np.float32), rng.integers(0, 10, 48)
    monkeypatch.setattr(batches, "LOSS_READ_EVERY", 4)
    runs = {}
    for backend in ("numpy", "cupy"):
        with standin_cupy():
            tinydgl.set_backend(backend)
            model = build_model("mlp", 1, 12, 10, seed=0, dtype="float32", hidden=(16,))
            trainer = build_trainer("bp", model, lambda p: Adam(p, lr=1e-3))
            loop = batches.BatchLoop(trainer, DataLoader(x, y, 4, seed=0), FitConfig(1, progress=False))
            STATS.reset()
            runs[backend] = loop.train(0, [], None)
            reads = sum(n for (what, site), n in STATS.syncs.items() if "batches.py" in site)
    assert reads == 3, STATS.syncs
    assert runs["cupy"].train_loss == runs["numpy"].train_loss
    assert runs["cupy"].extra["loss_curve"] == runs["numpy"].extra["loss_curve"]


# --- the command line -----------------------------------------------------------------------------------------
def test_tinydgl_train_backend_cupy_on_the_standin(tmp_path):
    """`tinydgl train --backend cupy` in a process of its own whose `import cupy` is the stand-in: the
    default model (cnn) and trainer (bp), and LLS on smallconv; no traceback, a finite loss, and the syncs
    the run made, per training step, within bp's budget plus the evaluation's reads."""
    for trainer, model in (("bp", "cnn"), ("lls", "smallconv")):
        metrics = tmp_path / f"{trainer}.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tinydgl",
                "train",
                "--backend",
                "cupy",
                "--trainer",
                trainer,
                "--model",
                model,
                "--limit-train",
                "32",
                "--limit-test",
                "16",
                "--batch-size",
                "16",
                "--epochs",
                "1",
                "--no-progress",
                "--metrics-json",
                str(metrics),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=subprocess_env(stats=tmp_path / f"stats-{trainer}"),
        )
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        result = json.loads(metrics.read_text())
        assert result["environment"]["backend"] == "cupy"
        assert np.isfinite(result["history"][0]["train_loss"]), result["history"]
        stats = [json.loads(p.read_text()) for p in tmp_path.glob(f"stats-{trainer}.*")]
        assert stats and sum(n for s in stats for _, _, n in s["uploads"]) > 0, "the data went to the device"


# The command, for every trainer on every model it takes: one child process (a hundred process starts would
# cost minutes) whose `import cupy` is the stand-in, calling the command's `main` once per case.
COMMAND_DRIVER = """
import contextlib, io, json, math, sys
from tinydgl.cli import main
results = []
for trainer, model, extra, metrics in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", "--backend", "cupy", "--trainer", trainer, "--model", model, "--limit-train", "16",
                     "--limit-test", "8", "--batch-size", "8", "--bn-recalibrate", "0", "--no-progress",
                     "--metrics-json", metrics, *extra])
    loss = json.load(open(metrics))["history"][0]["train_loss"] if code == 0 else None
    results.append({"case": [trainer, model], "code": code, "finite": loss is not None and math.isfinite(loss),
                    "stderr": err.getvalue()[-2000:]})
print(json.dumps(results))
"""


@pytest.mark.slow
def test_the_command_trains_every_trainer_on_every_model_on_the_standin(tmp_path):
    """`tinydgl train --backend cupy` runs every trainer on every model it takes (ff and pepita: mlp only) on
    the stand-in: exit 0, a finite training loss, no traceback (16 images, batch 8, mnist-small)."""
    cases = [
        (
            t,
            m,
            ["--no-batchnorm"] if MODEL_OPTIONS.get(t) == {"batchnorm": False} else [],
            str(tmp_path / f"{t}-{m}.json"),
        )
        for t in TRAINERS
        for m in _models(t, list(MODELS))
    ]
    proc = subprocess.run(
        [sys.executable, "-c", COMMAND_DRIVER, json.dumps(cases)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=subprocess_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    failed = [r for r in results if r["code"] != 0 or not r["finite"] or "Traceback" in r["stderr"]]
    assert not failed, failed
    assert len(results) == len(cases) > 2 * len(MODELS)
