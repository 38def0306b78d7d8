"""A catalogue of bad inputs, each with its own test: every one gets one clear message on stderr
(``tinydgl: error: ...`` and exit 1 for our errors, argparse's ``usage: ... error: ...`` and exit 2 for option
syntax), no traceback, and no output file that looks complete (no metrics JSON, no plot).

docs/errors.md's section "When something goes wrong" lists the same cases; keep the two in step. The checkpoint
cases are at the end (how checkpoints are written, kept and resumed is tested in tests/test_long_runs.py).

Most cases call `tinydgl.cli.main` in-process and fail before training; a few need a fresh interpreter
(environment variables read by `import tinydgl`). Data cases use full-size, uncompressed MNIST files (the only
form whose structure tinydgl checks beyond a checksum), built once per module from zeros and shared through
symlinks, so each case differs from a loadable copy in exactly one file.
"""
import gzip
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tinydgl import backend
from tinydgl.cli import main
from tinydgl.data import DATASETS, load_dataset
from tinydgl.data import datasets as ds

SMALL = ["--model", "mlp", "--limit-train", "64", "--limit-test", "32", "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Offline, with empty data folders and no system copies; the backend is restored after each test."""
    monkeypatch.setenv("TINYDGL_OFFLINE", "1")
    monkeypatch.setenv("TINYDGL_DATA", str(tmp_path / "data-env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYDGL_BACKEND", raising=False)
    for name, info in DATASETS.items():
        monkeypatch.setitem(DATASETS, name, ds.replace(info, system_dirs=()))
    monkeypatch.setattr(backend, "_active", backend._active)
    return tmp_path


def run(capsys, tmp_path, *args, command="train", outputs=True):
    """Run the command in-process; return (exit code, stderr). With `outputs`, ask for a metrics file and a
    plot and check that neither was written."""
    metrics, plot = tmp_path / "out" / "m.json", tmp_path / "out" / "curves.png"
    extra = ["--metrics-json", str(metrics), "--plot", str(plot)] if outputs else []
    try:
        code = main([command, *args, *extra])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    if outputs:
        assert not metrics.exists() and not plot.exists(), "a failed run left an output file"
        assert "metrics written" not in out
    return code, err


def expect(code, err, want_code, message):
    """Exit `want_code` and exactly one error message containing `message`, in the right style."""
    assert code == want_code, err
    if want_code == 1:
        assert err.startswith("tinydgl: error: "), err
        assert err.count("tinydgl: error:") == 1, err
    else:
        assert err.startswith("usage: tinydgl"), err
        assert err.count(" error: ") == 1, err
        assert len(err.splitlines()) <= 3, err  # a short usage line, not the subcommand's 60 options
    assert message in err, err


# --- option values out of range (argparse types: exit 2) ------------------------------------------------------
RANGE_CASES = [
    (["--momentum", "-0.5"], "argument --momentum: must be 0 or more, got -0.5"),
    (["--lr-schedule", "warmup"], "argument --lr-schedule: unknown lr schedule 'warmup'; choose one of: constant, cooldown"),
    (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
    (["--epochs", "two"], "argument --epochs: must be a positive integer, got 'two'"),
    (["--batch-size", "-5"], "argument --batch-size: must be a positive integer, got -5"),
    (["--lr", "0"], "argument --lr: must be positive, got 0"),
    (["--lr", "-1"], "argument --lr: must be positive, got -1"),
    (["--lr", "nan"], "argument --lr: must be a positive number, got nan"),
    (["--lr", "inf"], "argument --lr: must be a positive number, got inf"),
    (["--weight-decay", "-1"], "argument --weight-decay: must be 0 or more, got -1"),
    (["--weight-decay", "nan"], "argument --weight-decay: must be a number, 0 or more, got nan"),
    (["--limit-train", "0"], "argument --limit-train: must be a positive integer, got 0"),
    (["--limit-test", "-1"], "argument --limit-test: must be a positive integer, got -1"),
    (["--seed", "-1"], "argument --seed: must be 0 or more, got -1"),
    (["--bn-recalibrate", "2.5"], "argument --bn-recalibrate: must be an integer, 0 or more, got '2.5'"),
    (["--trainer", "lls", "--temperature", "0"], "argument --temperature: must be positive, got 0"),
    (["--trainer", "lls", "--temperature", "inf"], "argument --temperature: must be a positive number, got inf"),
    (["--trainer", "dni", "--sg-scale", "0"], "argument --sg-scale: must be positive, got 0"),
    (["--label-smoothing", "1"], "argument --label-smoothing: must be in [0, 1), got 1"),
    (["--label-smoothing", "-0.1"], "argument --label-smoothing: must be in [0, 1), got -0.1"),
    (["--trainer", "async-dgl", "--buffer-size", "0"], "argument --buffer-size: must be a positive integer, got 0"),
    (["--trainer", "async-dgl", "--slowdown", "inf"], "argument --slowdown: must be a positive number, got inf"),
    (["--trainer", "dgl", "--modules", "0"], "argument --modules: must be a positive integer, got 0"),
    (["--trainer", "dgl", "--boundaries", "1.5"], "argument --boundaries: expected comma-separated integers, got '1.5'"),
    (["--trainer", "dgl", "--boundaries", ","], "argument --boundaries: expected comma-separated integers, got ',' (no numbers)"),
    (["--trainer", "dni", "--interfaces", "a"], "argument --interfaces: expected comma-separated integers, got 'a'"),
    (["--workers", "0"], "argument --workers: must be a positive integer, got 0"),
]


@pytest.mark.parametrize("args, message", RANGE_CASES, ids=[" ".join(a) for a, _ in RANGE_CASES])
def test_option_out_of_range_is_a_usage_error(args, message, capsys, tmp_path):
    expect(*run(capsys, tmp_path, *SMALL, *args), 2, message)


# --- option values the trainer refuses (its constructor's ValueError: exit 1) -----------------------------
TRAINER_RANGE_CASES = [
    (["--trainer", "dni", "--update-prob", "1.5"], "--trainer dni: update_prob is a probability in (0, 1], got 1.5."),
    (["--trainer", "dni", "--update-prob", "-0.5"], "--trainer dni: update_prob is a probability in (0, 1], got -0.5."),
    (["--trainer", "dni", "--bp-lambda", "1.5"], "--trainer dni: bp_lambda mixes two gradients and must be in [0, 1], got 1.5."),
    (["--trainer", "dni", "--bp-lambda", "-0.1"], "--trainer dni: bp_lambda mixes two gradients and must be in [0, 1], got -0.1."),
    (["--trainer", "dni", "--interfaces", "9"], "--trainer dni: interfaces are indices of blocks followed by a synthesizer, in 0..1"),
    (["--trainer", "async-dgl", "--slowdown", "0.5"], "--trainer async-dgl: slowdown must be >= 1"),
    (["--trainer", "async-dgl", "--slow-module", "5"], "--trainer async-dgl: slow_module must be a module index in 0..1"),
    (["--trainer", "dgl", "--modules", "99"], "--trainer dgl: --modules must be between 1 and 2 (the model's hidden blocks), got 99."),
    (["--trainer", "dgl", "--boundaries", "5"], "--trainer dgl: module boundaries must lie in 1..1"),
]


@pytest.mark.parametrize("args, message", TRAINER_RANGE_CASES, ids=[" ".join(a) for a, _ in TRAINER_RANGE_CASES])
def test_option_the_trainer_refuses(args, message, capsys, tmp_path):
    expect(*run(capsys, tmp_path, *SMALL, *args), 1, message)


# --- unknown names --------------------------------------------------------------------------------------------
UNKNOWN_OPTION_CASES = [  # argparse choices: exit 2, listing the valid names
    (["--model", "vgg16"], "argument --model: unknown model 'vgg16'; choose one of: mlp, cnn, smallconv"),
    (["--trainer", "backprop"], "argument --trainer: unknown trainer 'backprop'; choose one of: bp, dni"),
    (["--optimizer", "lamb"], "argument --optimizer: unknown optimizer 'lamb'; choose one of: sgd, adam, adamw"),
    (["--dataset", "cifar100"], "argument --dataset: unknown dataset 'cifar100'; choose one of: mnist-small, mnist"),
    (["--backend", "tpu"], "argument --backend: unknown backend 'tpu'; choose one of: numpy, cupy"),
]


@pytest.mark.parametrize("args, message", UNKNOWN_OPTION_CASES, ids=[" ".join(a) for a, _ in UNKNOWN_OPTION_CASES])
def test_unknown_name_lists_the_valid_ones(args, message, capsys, tmp_path):
    expect(*run(capsys, tmp_path, *SMALL, *args), 2, message)


UNKNOWN_METHOD_CASES = [  # the trainer's registry: exit 1, listing the valid names
    (["--trainer", "dgl", "--aux", "resnet"], "--trainer dgl: Unknown auxiliary head 'resnet'; choose one of: mlp-sr, mlp, cnn, linear, pred, sim, predsim."),
    (["--trainer", "lls", "--waveform", "triangle"], "--trainer lls: Unknown waveform 'triangle'; choose one of: sin, square, cosine, random."),
    (["--trainer", "dni", "--synthesizer", "rnn"], "--trainer dni: Unknown synthesizer 'rnn'; choose one of: auto, linear, mlp, conv, mlp1."),
    (["--trainer", "async-dgl", "--schedule", "fifo"], "--trainer async-dgl: Unknown schedule 'fifo'; choose one of: random, round-robin."),
    (["--trainer", "async-dgl", "--buffer-codec", "zip"], "--trainer async-dgl: Unknown buffer codec 'zip'; choose 'vq'"),
]


@pytest.mark.parametrize("args, message", UNKNOWN_METHOD_CASES, ids=[" ".join(a) for a, _ in UNKNOWN_METHOD_CASES])
def test_unknown_method_option_value_lists_the_valid_ones(args, message, capsys, tmp_path):
    expect(*run(capsys, tmp_path, *SMALL, *args), 1, message)


# --- misspelt options and names: a short usage line and "did you mean" (exit 2) -----------------------------------
TYPO_CASES = [
    (["--trainers", "bp"], "unrecognized arguments: --trainers bp. Did you mean --trainer?"),
    (["--limit_train", "64"], "unrecognized arguments: --limit_train 64. Did you mean --limit-train?"),
    (["--trainers=bp", "--no-progess"], "Did you mean --trainer (for --trainers), --no-progress (for --no-progess)?"),
    (["--xyzzy"], "unrecognized argument: --xyzzy. tinydgl train --help lists the options."),
    (["--trainer", "lss"], "unknown trainer 'lss'; choose one of: bp, dni, cdni, greedy, dgl, async-dgl, lls,"),
    (["--trainer", "lss"], "; did you mean lls?"),
    (["--optimizer", "adamw_sf"], "; did you mean adamw-sf?"),
]


@pytest.mark.parametrize("args, message", TYPO_CASES, ids=[" ".join(a) for a, _ in TYPO_CASES])
def test_a_misspelt_option_gets_the_subcommands_short_usage_and_a_suggestion(args, message, capsys, tmp_path):
    code, err = run(capsys, tmp_path, *SMALL, *args)
    expect(code, err, 2, message)
    assert err.startswith("usage: tinydgl train [options]  (tinydgl train --help lists them)\ntinydgl train: error: ")


def test_a_misspelt_compare_option(capsys, tmp_path):
    code, err = run(capsys, tmp_path, *SMALL, "--alignmnt", command="compare")
    expect(code, err, 2, "unrecognized argument: --alignmnt. Did you mean --alignment?")
    assert err.startswith("usage: tinydgl compare [options]")


@pytest.mark.parametrize("trainers, message", [
    ("bp,magic", "argument --trainers: unknown trainer(s) 'magic'; choose from: bp, dni"),
    ("bp,bp", "argument --trainers: bp listed twice in 'bp,bp'; name each trainer once"),
    ("bp,dlg", "argument --trainers: unknown trainer(s) 'dlg'; choose from: bp, dni, cdni, greedy, dgl,"),
    ("bp,dlg", ", fg, pepita; did you mean dgl?"),
])
def test_compare_refuses_a_bad_trainer_list(trainers, message, capsys, tmp_path):
    expect(*run(capsys, tmp_path, "--trainers", trainers, *SMALL, command="compare"), 2, message)


# --- combinations that do not fit ----------------------------------------------------------------------------
COMBINATION_CASES = [
    (["--momentum", "0.9"], "--momentum applies to --optimizer sgd (adam and the schedule-free optimizers have"),
    (["--trainer", "dgl", "--workers", "2", "--lr-schedule", "cooldown"],
     "--lr-schedule cooldown applies to in-process runs; the parallel engines train at a constant rate"),
    (["--model", "cnn", "--hidden", "100", "--activation", "tanh"],
     "--hidden, --activation apply to --model mlp only: add --model mlp, or leave them out for --model cnn."),
    (["--trainer", "bp", "--temperature", "0.5"], "--temperature do(es) not apply to --trainer bp: leave it out"),
    (["--trainer", "lls", "--aux", "mlp", "--sg-scale", "2"], "--aux, --sg-scale do(es) not apply to --trainer lls: leave them out"),
    (["--n-push", "2"], "--n-push applies to --parallel downpour --transport shm only: add --parallel downpour --workers J, or leave it out."),
    (["--trainer", "lls", "--workers", "2", "--n-fetch", "2"], "--n-fetch applies to --parallel downpour --transport shm only, not --parallel module"),
    (["--devices", "0"], "--devices applies to --parallel module --transport shm only: add --parallel module --workers J, or leave it out."),
    (["--trainer", "dp-sync"], "--parallel sync runs on worker processes: say how many with --workers J."),
    (["--parallel", "sync"], "--parallel sync runs on worker processes: say how many with --workers J."),
    (["--trainer", "bp", "--workers", "2"], "The module-parallel engine runs local trainers and synthetic gradients: dni, cdni, dgl, "),
    (["--trainer", "bp", "--parallel", "module", "--workers", "2"], "got 'bp'. Choose one of those, or run 'bp' with --parallel sync or downpour."),
    (["--trainer", "greedy", "--workers", "2"], "got 'greedy' (greedy trains one module at a time). Choose one of those, or train 'greedy' in-process."),
    (["--trainer", "dgl", "--parallel", "sync", "--workers", "2"], "Synchronous data-parallel SGD runs backprop in every worker, each on its shard of every batch: bp (BackpropTrainer); got 'dgl'."),
    (["--parallel", "downpour", "--transport", "mpi"], "Downpour SGD has no 'mpi' transport; it runs over shm: choose --transport shm."),
    (["--trainer", "dp-sync", "--parallel", "module", "--workers", "2"], "--trainer dp-sync means --parallel sync, but --parallel module was given: say only --parallel."),
    (["--trainer", "dgl", "--workers", "9"], "--workers 9: --trainer dgl on mlp has 2 module(s), and each worker runs at least one: use --workers 2 or fewer."),
    (["--trainer", "dgl", "--workers", "2", "--devices", "0"], "--workers 2: devices=[0] needs the CuPy backend (--backend cupy)"),
]


@pytest.mark.parametrize("args, message", COMBINATION_CASES, ids=[" ".join(a) for a, _ in COMBINATION_CASES])
def test_options_that_do_not_fit_together(args, message, capsys, tmp_path):
    expect(*run(capsys, tmp_path, *SMALL, *args), 1, message)


def test_compare_refuses_an_option_none_of_its_trainers_has(capsys, tmp_path):
    code, err = run(capsys, tmp_path, "--trainers", "bp,dgl", "--temperature", "0.5", *SMALL, command="compare")
    expect(code, err, 1, "--temperature applies to none of --trainers bp,dgl (it applies to lls")


# --- backends ------------------------------------------------------------------------------------------------
def _cupy_without_a_gpu():
    """What CuPy looks like on a machine without an NVIDIA driver: it imports, then every CUDA call fails."""

    class CUDARuntimeError(RuntimeError):
        pass

    def no_driver():
        raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")

    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver)))


def test_backend_cupy_without_cupy(capsys, tmp_path, monkeypatch):
    from tinydgl.extras import install_command

    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    expect(*run(capsys, tmp_path, *SMALL, "--backend", "cupy"), 1,
           f"The 'cupy' backend needs CuPy. Install it with: {install_command('gpu')}")


@pytest.mark.parametrize("extra", [[], ["--trainer", "dgl", "--workers", "2", "--devices", "0"]], ids=["in-process", "devices"])
def test_backend_cupy_without_a_gpu(extra, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _cupy_without_a_gpu())
    code, err = run(capsys, tmp_path, *SMALL, "--backend", "cupy", *extra)
    expect(code, err, 1, "The 'cupy' backend found no GPU: CuPy is installed, but CUDA reports cudaErrorInsufficientDriver")
    assert "--backend numpy" in err


def _run_cli(*args, env=None, tmp_path=None):
    environment = {**os.environ, "TINYDGL_OFFLINE": "1", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (environment.get("PYTHONPATH"), str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "tinydgl", *args], capture_output=True, text=True, timeout=120,
                          env=environment, cwd=tmp_path)


def test_tinydgl_backend_variable_with_a_bad_name(tmp_path):
    """Read by `import tinydgl`'s backend module: a bad value is one error naming the variable, not a
    traceback at import."""
    metrics = tmp_path / "m.json"
    result = _run_cli("train", *SMALL, "--metrics-json", str(metrics), env={"TINYDGL_BACKEND": "bogus"}, tmp_path=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("tinydgl: error: TINYDGL_BACKEND='bogus' is not a backend: set it to one of "
                                    "numpy, cupy, array_api_strict, or unset it"), result.stderr
    assert "Traceback" not in result.stderr and not metrics.exists()


def test_tinydgl_backend_variable_cupy_without_a_gpu(tmp_path):
    """TINYDGL_BACKEND=cupy on a machine without a GPU; a stand-in `cupy` (first on the path) behaves like
    CuPy without an NVIDIA driver, so the case is the same on every machine."""
    fake = tmp_path / "fake" / "cupy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "class CUDARuntimeError(RuntimeError):\n    pass\n\n\n"
        "class _Runtime:\n    @staticmethod\n    def getDeviceCount():\n"
        "        raise CUDARuntimeError('cudaErrorInsufficientDriver: CUDA driver version is insufficient')\n\n\n"
        "class cuda:\n    runtime = _Runtime\n")
    result = _run_cli("train", *SMALL, env={"TINYDGL_BACKEND": "cupy", "PYTHONPATH": str(fake.parent)}, tmp_path=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("tinydgl: error: TINYDGL_BACKEND=cupy: The 'cupy' backend found no GPU"), result.stderr
    assert "Traceback" not in result.stderr and "CUDARuntimeError" not in result.stderr


def test_backend_option_wins_over_a_bad_variable(tmp_path):
    """The control for the two above: an explicit --backend numpy does not read TINYDGL_BACKEND at all."""
    result = _run_cli("train", *SMALL, "--epochs", "1", "--backend", "numpy", env={"TINYDGL_BACKEND": "bogus"},
                      tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout


# --- output paths --------------------------------------------------------------------------------------------
def test_metrics_json_in_a_folder_that_cannot_be_made(capsys, tmp_path):
    code, err = run(capsys, tmp_path, *SMALL, "--metrics-json", "/proc/tinydgl-x/m.json", outputs=False)
    expect(code, err, 1, "--metrics-json /proc/tinydgl-x/m.json: cannot write there (/proc/tinydgl-x: ")
    assert "nothing was trained" in err


def test_metrics_json_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    code, err = run(capsys, tmp_path, *SMALL, "--metrics-json", str(blocker / "run" / "m.json"), outputs=False)
    expect(code, err, 1, f"cannot write there ({blocker} is a file, not a folder)")


@pytest.mark.parametrize("option, example", [("--metrics-json", "run.json"), ("--plot", "run.png")])
def test_output_file_that_is_a_folder(option, example, capsys, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    code, err = run(capsys, tmp_path, *SMALL, option, str(folder), outputs=False)
    expect(code, err, 1, f"{option} {folder} is a folder; give a file name (e.g. {folder / example}); nothing was trained.")
    assert os.listdir(folder) == []


@pytest.mark.parametrize("name, message", [
    ("curves.xyz", "cannot write .xyz images (Format 'xyz' is not supported"),
    ("curves", "has no extension, which names the image format: end it in .png"),
])
def test_plot_in_a_format_matplotlib_cannot_write(name, message, capsys, tmp_path):
    """Checked before training: before the fix, the run trained, wrote its metrics, then died in savefig."""
    metrics, plot = tmp_path / "m.json", tmp_path / name
    code, err = run(capsys, tmp_path, *SMALL, "--metrics-json", str(metrics), "--plot", str(plot), outputs=False)
    expect(code, err, 1, f"--plot {plot}")
    assert message in err and "nothing was trained" in err
    assert not metrics.exists() and not plot.exists() and not plot.with_suffix(".png").exists()


def test_metrics_json_and_plot_are_the_same_file(capsys, tmp_path):
    same = tmp_path / "run.png"
    code, err = run(capsys, tmp_path, *SMALL, "--metrics-json", str(same), "--plot", str(same), outputs=False)
    expect(code, err, 1, f"--metrics-json and --plot both name {same}: the plot would overwrite the metrics.")
    assert not same.exists()


def test_empty_output_name(capsys, tmp_path):
    code, err = run(capsys, tmp_path, *SMALL, "--metrics-json", "", outputs=False)
    expect(code, err, 1, "--metrics-json got an empty name; give a file name, or leave --metrics-json out")


# --- data files ----------------------------------------------------------------------------------------------
MNIST_NAMES = {  # uncompressed names, in the order tinydgl reads them, and their shapes
    "train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,),
}


def idx_bytes(shape, type_code=0x08, fill=0):
    header = bytes([0, 0, type_code, len(shape)]) + np.asarray(shape, ">u4").tobytes()
    return header + np.full(int(np.prod(shape)), fill, np.uint8).tobytes()


@pytest.fixture(scope="module")
def good_mnist(tmp_path_factory):
    """A complete, loadable MNIST copy in the published structure (all pixels and labels 0)."""
    folder = tmp_path_factory.mktemp("good-mnist")
    for name, shape in MNIST_NAMES.items():
        (folder / name).write_bytes(idx_bytes(shape))
    return folder


def mnist_with(good, tmp_path, name, content=None):
    """A --data-dir whose MNIST files are the good ones except `name`: `content` bytes, or made by the
    caller when None."""
    folder = tmp_path / "mnist-data"
    folder.mkdir()
    for other in MNIST_NAMES:
        if other != name:
            (folder / other).symlink_to(good / other)
    if content is not None:
        (folder / name).write_bytes(content)
    return folder


def data_run(capsys, tmp_path, folder, dataset="mnist"):
    return run(capsys, tmp_path, *SMALL, "--dataset", dataset, "--data-dir", str(folder))


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_the_good_mnist_copy_loads(good_mnist):
    """The control for the MNIST cases: each differs from this loadable copy in one file."""
    data = load_dataset("mnist", data_dir=good_mnist, limit_train=64, limit_test=32)
    assert data.x_train.shape == (64, 1, 28, 28) and data.y_test.shape == (32,)


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_truncated_file(good_mnist, capsys, tmp_path):
    full = idx_bytes(MNIST_NAMES["train-images-idx3-ubyte"])
    folder = mnist_with(good_mnist, tmp_path, "train-images-idx3-ubyte", full[: len(full) // 3])
    expect(*data_run(capsys, tmp_path, folder), 1,
           f"{folder / 'train-images-idx3-ubyte'}: size failed: expected 47040016 bytes (decompressed "
           f"train-images-idx3-ubyte.gz), got {len(full) // 3}")


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_wrong_magic_number(good_mnist, capsys, tmp_path):
    content = bytearray(idx_bytes(MNIST_NAMES["t10k-images-idx3-ubyte"]))
    content[:4] = b"\x89PNG"
    folder = mnist_with(good_mnist, tmp_path, "t10k-images-idx3-ubyte", bytes(content))
    code, err = data_run(capsys, tmp_path, folder)
    expect(code, err, 1, f"{folder / 't10k-images-idx3-ubyte'}: IDX magic number failed: expected 00 00 <type in")
    assert "got 89 50 4e 47 (not an IDX file)" in err


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_header_count_disagrees_with_the_data(good_mnist, capsys, tmp_path):
    content = bytearray(idx_bytes(MNIST_NAMES["train-labels-idx1-ubyte"]))
    content[4:8] = np.asarray([50000], ">u4").tobytes()  # header: 50,000 labels; data: 60,000 bytes
    folder = mnist_with(good_mnist, tmp_path, "train-labels-idx1-ubyte", bytes(content))
    expect(*data_run(capsys, tmp_path, folder), 1,
           f"{folder / 'train-labels-idx1-ubyte'}: IDX size failed: the header says shape (50000,) (50000 bytes "
           f"of data) but the file has 60000: has trailing bytes")


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_label_count_differs_from_image_count(good_mnist, capsys, tmp_path):
    # Same file size as the real labels (60,008 bytes), but 2 x 29,998 labels where 60,000 images need one each.
    folder = mnist_with(good_mnist, tmp_path, "train-labels-idx1-ubyte", idx_bytes((2, 29998)))
    expect(*data_run(capsys, tmp_path, folder), 1,
           f"{folder / 'train-labels-idx1-ubyte'}: label count failed: expected 60000 labels (one per image in "
           f"{folder / 'train-images-idx3-ubyte'}), got shape (2, 29998)")


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_label_out_of_range(good_mnist, capsys, tmp_path):
    content = bytearray(idx_bytes(MNIST_NAMES["t10k-labels-idx1-ubyte"]))
    content[8 + 5] = 12  # label of test image 5
    folder = mnist_with(good_mnist, tmp_path, "t10k-labels-idx1-ubyte", bytes(content))
    expect(*data_run(capsys, tmp_path, folder), 1,
           f"{folder / 't10k-labels-idx1-ubyte'}: label range failed: labels must be 0..9 (10 classes), found 12 "
           f"at index 5 (1 of 10,000 labels out of range)")


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_negative_labels(good_mnist, capsys, tmp_path):
    """Signed labels (IDX type 09) fit the published size exactly, so only the type check stops a -1."""
    folder = mnist_with(good_mnist, tmp_path, "train-labels-idx1-ubyte",
                        idx_bytes(MNIST_NAMES["train-labels-idx1-ubyte"], type_code=0x09, fill=255))
    expect(*data_run(capsys, tmp_path, folder), 1,
           f"{folder / 'train-labels-idx1-ubyte'}: label type failed: expected uint8 labels (IDX type code 08, "
           f"as published), got int8")


def test_label_range_check_refuses_negative_values(tmp_path):
    """The range check itself, for readers whose labels are signed."""
    from tinydgl.data import IdxFormatError

    with pytest.raises(IdxFormatError, match=r"labels must be 0\.\.9 \(10 classes\), found -1 at index 2"):
        ds.check_label_range(np.array([0, 3, -1, 9]), 10, tmp_path / "labels")


def test_mnist_folder_where_a_file_should_be(good_mnist, capsys, tmp_path):
    folder = mnist_with(good_mnist, tmp_path, "train-images-idx3-ubyte")
    (folder / "train-images-idx3-ubyte").mkdir()
    expect(*data_run(capsys, tmp_path, folder), 1,
           f"{folder / 'train-images-idx3-ubyte'}: reading failed: this is a folder, but tinydgl expects the file "
           f"train-images-idx3-ubyte.gz here")


@pytest.mark.filterwarnings("ignore:.*no published checksum")
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root, chmod 000 does not stop reading; test_mnist_file_that_fails_to_read "
                           "covers the same error path")
def test_mnist_file_without_read_permission(good_mnist, capsys, tmp_path):
    folder = mnist_with(good_mnist, tmp_path, "train-labels-idx1-ubyte", idx_bytes(MNIST_NAMES["train-labels-idx1-ubyte"]))
    (folder / "train-labels-idx1-ubyte").chmod(0)
    expect(*data_run(capsys, tmp_path, folder), 1,
           f"{folder / 'train-labels-idx1-ubyte'}: reading failed: cannot read the file (Permission denied)")


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc/self/mem")
def test_mnist_file_that_fails_to_read(good_mnist, capsys, tmp_path):
    """An unreadable file even for root: a link to /proc/self/mem, whose first page fails with EIO."""
    folder = mnist_with(good_mnist, tmp_path, "train-images-idx3-ubyte")
    (folder / "train-images-idx3-ubyte").symlink_to("/proc/self/mem")
    expect(*data_run(capsys, tmp_path, folder), 1,
           f"{folder / 'train-images-idx3-ubyte'}: reading failed: cannot read the file (Input/output error); check "
           f"its permissions")


def test_mnist_gzip_that_is_not_the_published_file(capsys, tmp_path):
    """MNIST has no published checksum of its decompressed files, so a .gz must be the published one."""
    folder = tmp_path / "mnist-gz"
    folder.mkdir()
    for name, shape in MNIST_NAMES.items():
        (folder / (name + ".gz")).write_bytes(gzip.compress(idx_bytes(shape[:1] + (1,) * (len(shape) - 1)), mtime=0))
    expect(*data_run(capsys, tmp_path, folder), 1,
           f"{folder / 'train-images-idx3-ubyte.gz'}: SHA-256 failed: expected "
           f"{DATASETS['mnist'].files[0].sha256} (published train-images-idx3-ubyte.gz)")


def _fashion_folder(tmp_path, train_images):
    folder = tmp_path / "fashion"
    folder.mkdir()
    for remote in DATASETS["fashion-mnist"].files:
        (folder / remote.filename).write_bytes(gzip.compress(idx_bytes((3,)), mtime=0))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(train_images)
    return folder


def test_fashion_mnist_truncated_gzip(capsys, tmp_path):
    whole = gzip.compress(idx_bytes((100, 28, 28), fill=7), mtime=0)
    folder = _fashion_folder(tmp_path, whole[: len(whole) // 2])
    code, err = data_run(capsys, tmp_path, folder, "fashion-mnist")
    expect(code, err, 1, f"{folder / 'train-images-idx3-ubyte.gz'}: gzip decompression failed: Compressed file ended "
                         f"before the end-of-stream marker was reached (the file is corrupted or truncated)")


def test_fashion_mnist_corrupted_gzip(capsys, tmp_path):
    whole = bytearray(gzip.compress(idx_bytes((100, 28, 28), fill=7), mtime=0))
    whole[-6] ^= 0xFF  # the CRC-32 in the trailer
    folder = _fashion_folder(tmp_path, bytes(whole))
    code, err = data_run(capsys, tmp_path, folder, "fashion-mnist")
    expect(code, err, 1, f"{folder / 'train-images-idx3-ubyte.gz'}: gzip decompression failed: CRC check failed")
    assert "(the file is corrupted or truncated)" in err


def test_fashion_mnist_wrong_content(capsys, tmp_path):
    """A well-formed IDX file that is not Fashion-MNIST's: its checksum gives it away."""
    folder = _fashion_folder(tmp_path, gzip.compress(idx_bytes((100, 28, 28)), mtime=0))
    code, err = data_run(capsys, tmp_path, folder, "fashion-mnist")
    expect(code, err, 1, f"{folder / 'train-images-idx3-ubyte.gz'}: SHA-256 failed: neither the file")
    assert "delete it and get it again" in err


def test_data_dir_that_is_a_file(capsys, tmp_path):
    not_a_folder = tmp_path / "mnist.zip"
    not_a_folder.write_bytes(b"PK")
    expect(*data_run(capsys, tmp_path, not_a_folder), 1,
           f"--data-dir {not_a_folder} is a file; give the folder that holds the mnist files")


@pytest.mark.parametrize("dataset, message", [
    ("mnist", "--data-dir {} does not exist; give the folder that holds the mnist files (make it first to download "
              "into it), or leave --data-dir out to use $TINYDGL_DATA or the cache; nothing was trained."),
    ("mnist-small", "--data-dir {} does not exist; mnist-small is bundled with tinydgl and reads no folder"),
])
def test_data_dir_that_does_not_exist(dataset, message, good_mnist, capsys, tmp_path, monkeypatch):
    """Before the fix, the search went on to $TINYDGL_DATA and the cache and trained on what it found there."""
    monkeypatch.setenv("TINYDGL_DATA", str(good_mnist))  # data elsewhere that must not be used instead
    missing = tmp_path / "no-such-folder"
    expect(*data_run(capsys, tmp_path, missing, dataset), 1, message.format(missing))


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_a_data_dir_without_the_files_says_where_they_were_found(good_mnist, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYDGL_DATA", str(good_mnist))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", *SMALL, "--dataset", "mnist", "--data-dir", str(empty)]) == 0
    out = capsys.readouterr().out
    assert f"note: --data-dir {empty} has no mnist files; they were found in {good_mnist}.\n" in out
    assert f"data read from {good_mnist}\n" in out


def test_the_banner_says_where_the_data_came_from(capsys, tmp_path):
    assert main(["train", *SMALL, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"note: mnist-small is bundled with tinydgl; --data-dir {tmp_path} is not read." in out
    assert f"data read from {ds.MNIST_SMALL_PATH}\n" in out


# --- runs that would quietly do less than asked ----------------------------------------------------------------
def test_diverging_learning_rate_is_said_in_words(tmp_path):
    """--lr 1e9 with adam: the second moment overflows to inf, which freezes the weights while the loss stays
    finite (1e32); before the fix NumPy printed 'RuntimeWarning: overflow' with a source path and the run
    exited 0 with a meaningless accuracy. In a fresh interpreter, to see exactly what a person sees."""
    folder = tmp_path / "ckpt"
    result = _run_cli("train", *SMALL, "--model", "cnn", "--limit-train", "256", "--lr", "1e9", "--checkpoint-dir",
                      str(folder), "--metrics-json", str(tmp_path / "m.json"), tmp_path=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("tinydgl: error: Training diverged: numbers overflowed to inf in a training step "
                                    "(the loss was "), result.stderr
    assert ") at epoch 1, step " in result.stderr
    assert ("the learning rate 1e+09 is likely too high: try a smaller one (--lr). No checkpoint was written to "
            f"{folder}. The default for --optimizer adam is 0.002") in result.stderr
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr and ".py" not in result.stderr
    assert not (tmp_path / "m.json").exists()


def test_a_loss_that_explodes_while_finite_is_divergence(capsys, tmp_path):
    """The mlp's batch norm keeps its numbers in range at --lr 1e9, but the loss reaches 1e19: before the fix
    the run exited 0 with an accuracy near chance."""
    code, err = run(capsys, tmp_path, *SMALL, "--limit-train", "256", "--lr", "1e9")
    expect(code, err, 1, "Training diverged: the loss grew to ")
    assert "at the run's first step) at epoch 1, step " in err and "learning rate 1e+09 is likely too high" in err


def test_greedy_says_which_modules_the_epochs_train(capsys, tmp_path):
    """greedy on the mlp has 2 modules, one epoch each: --epochs 1 leaves the second untrained."""
    assert main(["train", *SMALL, "--trainer", "greedy"]) == 0
    out = capsys.readouterr().out
    assert ("greedy trains its 2 modules one after another, 1 epoch(s) each (--epochs-per-module 1): module 1: epoch "
            "1. Note: with --epochs 1, module 2 keeps its random initial weights, and the test uses module 1's "
            "auxiliary head. To train both modules, use --epochs 2.") in out
    assert main(["train", *SMALL, "--trainer", "greedy", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "the last one also the epochs left: module 1: epoch 1; module 2: epochs 2-3." in out and "Note" not in out


# --- checkpoints (tinydgl/train/checkpoint.py; the mechanics are tested in tests/test_long_runs.py) ---------------
def _checkpoint(tmp_path, capsys, *extra, trainer="dgl"):
    """A finished 2-epoch run's checkpoint folder (the last two checkpoints: after epochs 1 and 2)."""
    folder = tmp_path / "ckpt"
    assert main(["train", *SMALL, "--trainer", trainer, "--epochs", "2", "--checkpoint-dir", str(folder), *extra]) == 0
    capsys.readouterr()
    return folder


def test_resume_without_a_checkpoint_dir(capsys, tmp_path):
    expect(*run(capsys, tmp_path, *SMALL, "--resume"), 1, "--resume needs --checkpoint-dir")


def test_resume_from_an_empty_folder(capsys, tmp_path):
    expect(*run(capsys, tmp_path, *SMALL, "--resume", "--checkpoint-dir", str(tmp_path / "none")), 1,
           "No checkpoint to resume from")


def test_checkpoint_every_without_a_checkpoint_dir(capsys, tmp_path):
    expect(*run(capsys, tmp_path, *SMALL, "--checkpoint-every", "10"), 1, "--checkpoint-every needs --checkpoint-dir")


def test_checkpoint_every_zero(capsys, tmp_path):
    expect(*run(capsys, tmp_path, *SMALL, "--checkpoint-every", "0"), 2,
           "argument --checkpoint-every: must be a positive integer, got 0")


def test_a_checkpoint_is_not_overwritten_without_resume(capsys, tmp_path):
    folder = _checkpoint(tmp_path, capsys)
    saved = (folder / "latest.json").read_text()
    expect(*run(capsys, tmp_path, *SMALL, "--trainer", "dgl", "--checkpoint-dir", str(folder)), 1,
           "already holds a checkpoint. Add --resume")
    assert (folder / "latest.json").read_text() == saved


@pytest.mark.parametrize("other, differ", [(["--trainer", "lls"], "(trainer differs)"),
                                           (["--trainer", "dgl", "--aux", "linear"], "(--aux differs)"),
                                           (["--trainer", "dgl", "--optimizer", "sgd"], "(optimizer differs)")])
def test_resume_by_another_run_is_refused_naming_both(other, differ, capsys, tmp_path):
    folder = _checkpoint(tmp_path, capsys)
    saved = (folder / "latest.json").read_text()
    code, err = run(capsys, tmp_path, *SMALL, *other, "--epochs", "3", "--checkpoint-dir", str(folder), "--resume")
    expect(code, err, 1, "belongs to another run: it was written by dgl on mlp (mnist-small), adam; this run is")
    assert differ in err
    assert (folder / "latest.json").read_text() == saved  # nothing was trained or saved


@pytest.mark.parametrize("damage, message", [
    ("truncate-arrays", "does not match the SHA-256 recorded in latest.json"),
    ("truncate-record", "latest.json is not a complete checkpoint record (truncated or corrupted"),
    ("edit-record", "latest.json does not match its own SHA-256"),
])
def test_a_damaged_checkpoint_is_refused_and_the_previous_offered(damage, message, capsys, tmp_path):
    folder = _checkpoint(tmp_path, capsys)
    record = folder / "latest.json"
    if damage == "truncate-arrays":
        arrays = folder / "state-epoch0002.npz"
        arrays.write_bytes(arrays.read_bytes()[:500])
    elif damage == "truncate-record":
        record.write_text(record.read_text()[:100])
    else:
        record.write_text(record.read_text().replace('"epoch": 2', '"epoch": 1', 1))
    code, err = run(capsys, tmp_path, *SMALL, "--trainer", "dgl", "--epochs", "3", "--checkpoint-dir", str(folder),
                    "--resume")
    expect(code, err, 1, message)
    assert "The previous checkpoint (after epoch 1) is intact and kept: resume from it with --resume previous" in err
    assert main(["train", *SMALL, "--trainer", "dgl", "--epochs", "3", "--checkpoint-dir", str(folder), "--resume",
                 "previous"]) == 0
    assert "resumed from" in capsys.readouterr().out


@pytest.mark.parametrize("epochs", ["1", "2"])
def test_resume_with_no_epochs_left_says_nothing_to_do(epochs, capsys, tmp_path):
    """Exit 0 (the run asked for exists), nothing trained or written; before the fix: silence, and the old
    metrics printed as if just trained."""
    folder = _checkpoint(tmp_path, capsys)
    saved = (folder / "latest.json").read_text()
    metrics = tmp_path / "m.json"
    assert main(["train", *SMALL, "--trainer", "dgl", "--epochs", epochs, "--checkpoint-dir", str(folder), "--resume",
                 "--metrics-json", str(metrics)]) == 0
    out = capsys.readouterr().out
    assert (f"tinydgl: nothing to do: the checkpoint in {folder} has already done 2 epoch(s), and --epochs {epochs} "
            f"counts the epochs of the whole run, resumed ones included. To train more, raise it (e.g. --epochs 3); "
            f"nothing was trained or written.") in out
    assert "epoch   " not in out and "test accuracy" not in out and not metrics.exists()
    assert (folder / "latest.json").read_text() == saved


def test_resume_previous_when_there_is_none(capsys, tmp_path):
    folder = tmp_path / "one"
    assert main(["train", *SMALL, "--checkpoint-dir", str(folder)]) == 0
    capsys.readouterr()
    expect(*run(capsys, tmp_path, *SMALL, "--epochs", "2", "--checkpoint-dir", str(folder), "--resume", "previous"),
           1, "No previous checkpoint in")


def test_a_parallel_run_refuses_a_mid_epoch_checkpoint(capsys, tmp_path):
    folder = _checkpoint(tmp_path, capsys, "--checkpoint-every", "1", "--limit-train", "256", "--batch-size", "64")
    meta = json.loads((folder / "previous.json").read_text())
    assert meta["step"] == 3  # epoch 2, batch 3 of 4: the save before the last
    expect(*run(capsys, tmp_path, *SMALL, "--trainer", "dgl", "--epochs", "3", "--limit-train", "256", "--batch-size",
                "64", "--checkpoint-dir", str(folder), "--resume", "previous", "--workers", "2"),
           1, "holds a mid-epoch checkpoint (at epoch 2, batch 3), written by an in-process run")
