"""Bad inputs: every one gets one clear message on stderr (``tinydgl: error: ...`` and exit 1 for our errors,
argparse's ``usage: ... error: ...`` and exit 2 for option syntax), no traceback, and no output file that looks
complete (no metrics JSON, no plot).

The cases and their messages are one table, tests/error_catalogue.py, which also writes docs/errors.md (a test
here fails when the page is not what it writes): `test_every_command_line_in_the_catalogue` runs each case that
is a command line; the tests below set up the cases that need more (a damaged file, a checkpoint) and check
them against the same table with `check(catalogued(request), ...)`. The checkpoint cases are at the end (how
checkpoints are written, kept and resumed is tested in tests/test_long_runs.py).

Most cases call `tinydgl.cli.main` in-process and fail before training; a few need a fresh interpreter
(environment variables read by `import tinydgl`). Data cases use full-size, uncompressed MNIST files (the only
form whose structure tinydgl checks beyond a checksum), built once per module from zeros and shared through
symlinks, so each case differs from a loadable copy in exactly one file.
"""

import gzip
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import error_catalogue
from error_catalogue import CASES, COMMAND_LINES, catalogued, check
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
    """Run the command in-process; return (exit code, stdout, stderr). With `outputs`, ask for a metrics file
    and a plot and check that neither was written."""
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
    return code, out, err


def expect(code, out, err, want_code, message):
    """For the few cases outside the catalogue: exit 1 and exactly one error message containing `message`."""
    assert code == want_code == 1, err
    assert err.startswith("tinydgl: error: ") and err.count("tinydgl: error:") == 1, err
    assert message in err, err


# --- the catalogue: every case that is a command line -----------------------------------------------------------
@pytest.mark.parametrize("case", COMMAND_LINES, ids=[" ".join([c.command, *c.argv]) for c in COMMAND_LINES])
def test_every_command_line_in_the_catalogue(case, capsys, tmp_path):
    """`tinydgl train SMALL ARGV` (or compare) prints the catalogue's message; DIR is an empty folder, which a
    failed run leaves empty."""
    folder = tmp_path / "DIR"
    folder.mkdir()
    argv = [arg.replace("DIR", str(folder)) for arg in case.argv]
    own_outputs = case.code == 0 or "--metrics-json" in argv or "--plot" in argv
    code, out, err = run(capsys, tmp_path, *SMALL, *argv, command=case.command, outputs=not own_outputs)
    check(case, code, out, err, folder)
    if case.code:
        assert os.listdir(folder) == [], "a failed run left a file behind"


def test_the_error_page_is_written_from_the_catalogue():
    assert error_catalogue.PAGE.read_text() == error_catalogue.render(), (
        "docs/errors.md differs from tests/error_catalogue.py: run `python tests/error_catalogue.py` to rewrite it"
    )


def test_every_case_that_needs_a_test_has_one():
    """A case that is not a command line names its test, and that test checks it (calls `catalogued`)."""
    for case in CASES:
        if case.test:
            file, _, name = case.test.rpartition("::")
            module = __import__(Path(file or __file__).stem)
            assert "catalogued(request" in inspect.getsource(getattr(module, name)), case.test


# --- backends ------------------------------------------------------------------------------------------------
def _cupy_without_a_gpu():
    """What CuPy looks like on a machine without an NVIDIA driver: it imports, then every CUDA call fails."""

    class CUDARuntimeError(RuntimeError):
        pass

    def no_driver():
        raise CUDARuntimeError(
            "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"
        )

    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver)))


def test_backend_cupy_without_cupy(capsys, tmp_path, monkeypatch, request):
    from tinydgl.extras import install_command

    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    code, out, err = run(capsys, tmp_path, *SMALL, "--backend", "cupy")
    check(catalogued(request), code, out, err)
    assert f"The 'cupy' backend needs CuPy. Install it with: {install_command('gpu')}" in err


@pytest.mark.parametrize(
    "extra", [[], ["--trainer", "dgl", "--workers", "2", "--devices", "0"]], ids=["in-process", "devices"]
)
def test_backend_cupy_without_a_gpu(extra, capsys, tmp_path, monkeypatch, request):
    monkeypatch.setitem(sys.modules, "cupy", _cupy_without_a_gpu())
    code, out, err = run(capsys, tmp_path, *SMALL, "--backend", "cupy", *extra)
    check(catalogued(request), code, out, err)
    assert "--backend numpy" in err


def _run_cli(*args, env=None, tmp_path=None):
    environment = {**os.environ, "TINYDGL_OFFLINE": "1", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (environment.get("PYTHONPATH"), str(ROOT)) if p)
    return subprocess.run(
        [sys.executable, "-m", "tinydgl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=tmp_path,
    )


def test_tinydgl_backend_variable_with_a_bad_name(tmp_path, request):
    """Read by `import tinydgl`'s backend module: a bad value is one error naming the variable, not a
    traceback at import."""
    metrics = tmp_path / "m.json"
    result = _run_cli(
        "train", *SMALL, "--metrics-json", str(metrics), env={"TINYDGL_BACKEND": "bogus"}, tmp_path=tmp_path
    )
    check(catalogued(request), result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("tinydgl: error: ") and not metrics.exists()


def test_tinydgl_backend_variable_cupy_without_a_gpu(tmp_path, request):
    """TINYDGL_BACKEND=cupy on a machine without a GPU; a stand-in `cupy` (first on the path) behaves like
    CuPy without an NVIDIA driver, so the case is the same on every machine."""
    fake = tmp_path / "fake" / "cupy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "class CUDARuntimeError(RuntimeError):\n    pass\n\n\n"
        "class _Runtime:\n    @staticmethod\n    def getDeviceCount():\n"
        "        raise CUDARuntimeError('cudaErrorInsufficientDriver: CUDA driver version is insufficient')\n\n\n"
        "class cuda:\n    runtime = _Runtime\n"
    )
    result = _run_cli(
        "train", *SMALL, env={"TINYDGL_BACKEND": "cupy", "PYTHONPATH": str(fake.parent)}, tmp_path=tmp_path
    )
    check(catalogued(request), result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("tinydgl: error: ") and "CUDARuntimeError" not in result.stderr


def test_backend_option_wins_over_a_bad_variable(tmp_path):
    """The control for the two above: an explicit --backend numpy does not read TINYDGL_BACKEND at all."""
    result = _run_cli(
        "train", *SMALL, "--epochs", "1", "--backend", "numpy", env={"TINYDGL_BACKEND": "bogus"}, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout


# --- output paths (the command-line cases are in the catalogue) -----------------------------------------------
def test_metrics_json_under_a_file(capsys, tmp_path, request):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    code, out, err = run(capsys, tmp_path, *SMALL, "--metrics-json", str(blocker / "run" / "m.json"), outputs=False)
    check(catalogued(request), code, out, err, tmp_path)


@pytest.mark.parametrize(
    "argv, beside",
    [(["--trainer", "dgl", "--workers", "2"], "run-timeline.png"), (["--alignment"], "run-alignment.png")],
    ids=["train", "compare"],
)
def test_a_plot_beside_the_plot_that_is_a_folder(argv, beside, capsys, tmp_path, request):
    """The second figure --plot implies (the workers' timeline, compare's alignment) is checked up front too:
    before, the run trained, then could not write it."""
    (tmp_path / beside).mkdir()
    command = "compare" if "--alignment" in argv else "train"
    code, out, err = run(
        capsys, tmp_path, *SMALL, *argv, "--plot", str(tmp_path / "run.png"), command=command, outputs=False
    )
    if command == "train":
        check(catalogued(request), code, out, err, tmp_path)
    else:
        expect(code, out, err, 1, f"also writes the alignment per block to {tmp_path / beside}, which is a folder")
    assert "epoch" not in out and sorted(os.listdir(tmp_path)) == [beside]


# --- data files ----------------------------------------------------------------------------------------------
MNIST_NAMES = {  # uncompressed names, in the order tinydgl reads them, and their shapes
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
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
def test_mnist_truncated_file(good_mnist, capsys, tmp_path, request):
    full = idx_bytes(MNIST_NAMES["train-images-idx3-ubyte"])
    folder = mnist_with(good_mnist, tmp_path, "train-images-idx3-ubyte", full[: len(full) // 3])
    code, out, err = data_run(capsys, tmp_path, folder)
    check(catalogued(request), code, out, err, folder)
    assert f"got {len(full) // 3}" in err


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_wrong_magic_number(good_mnist, capsys, tmp_path, request):
    content = bytearray(idx_bytes(MNIST_NAMES["t10k-images-idx3-ubyte"]))
    content[:4] = b"\x89PNG"
    folder = mnist_with(good_mnist, tmp_path, "t10k-images-idx3-ubyte", bytes(content))
    code, out, err = data_run(capsys, tmp_path, folder)
    check(catalogued(request), code, out, err, folder)
    assert "got 89 50 4e 47 (not an IDX file)" in err


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_header_count_disagrees_with_the_data(good_mnist, capsys, tmp_path, request):
    content = bytearray(idx_bytes(MNIST_NAMES["train-labels-idx1-ubyte"]))
    content[4:8] = np.asarray([50000], ">u4").tobytes()  # header: 50,000 labels; data: 60,000 bytes
    folder = mnist_with(good_mnist, tmp_path, "train-labels-idx1-ubyte", bytes(content))
    check(catalogued(request), *data_run(capsys, tmp_path, folder), folder)


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_label_count_differs_from_image_count(good_mnist, capsys, tmp_path, request):
    # Same file size as the real labels (60,008 bytes), but 2 x 29,998 labels where 60,000 images need one each.
    folder = mnist_with(good_mnist, tmp_path, "train-labels-idx1-ubyte", idx_bytes((2, 29998)))
    check(catalogued(request), *data_run(capsys, tmp_path, folder), folder)


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_label_out_of_range(good_mnist, capsys, tmp_path, request):
    content = bytearray(idx_bytes(MNIST_NAMES["t10k-labels-idx1-ubyte"]))
    content[8 + 5] = 12  # label of test image 5
    folder = mnist_with(good_mnist, tmp_path, "t10k-labels-idx1-ubyte", bytes(content))
    check(catalogued(request), *data_run(capsys, tmp_path, folder), folder)


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_mnist_negative_labels(good_mnist, capsys, tmp_path, request):
    """Signed labels (IDX type 09) fit the published size exactly, so only the type check stops a -1."""
    folder = mnist_with(
        good_mnist,
        tmp_path,
        "train-labels-idx1-ubyte",
        idx_bytes(MNIST_NAMES["train-labels-idx1-ubyte"], type_code=0x09, fill=255),
    )
    check(catalogued(request), *data_run(capsys, tmp_path, folder), folder)


def test_label_range_check_refuses_negative_values(tmp_path):
    """The range check itself, for readers whose labels are signed."""
    from tinydgl.data import IdxFormatError

    with pytest.raises(IdxFormatError, match=r"labels must be 0\.\.9 \(10 classes\), found -1 at index 2"):
        ds.check_label_range(np.array([0, 3, -1, 9]), 10, tmp_path / "labels")


def test_mnist_folder_where_a_file_should_be(good_mnist, capsys, tmp_path, request):
    folder = mnist_with(good_mnist, tmp_path, "train-images-idx3-ubyte")
    (folder / "train-images-idx3-ubyte").mkdir()
    check(catalogued(request), *data_run(capsys, tmp_path, folder), folder)


@pytest.mark.filterwarnings("ignore:.*no published checksum")
@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root, chmod 000 does not stop reading; test_mnist_file_that_fails_to_read "
    "covers the same error path",
)
def test_mnist_file_without_read_permission(good_mnist, capsys, tmp_path):
    folder = mnist_with(
        good_mnist, tmp_path, "train-labels-idx1-ubyte", idx_bytes(MNIST_NAMES["train-labels-idx1-ubyte"])
    )
    (folder / "train-labels-idx1-ubyte").chmod(0)
    expect(
        *data_run(capsys, tmp_path, folder),
        1,
        f"{folder / 'train-labels-idx1-ubyte'}: reading failed: cannot read the file (Permission denied)",
    )


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc/self/mem")
def test_mnist_file_that_fails_to_read(good_mnist, capsys, tmp_path, request):
    """An unreadable file even for root: a link to /proc/self/mem, whose first page fails with EIO."""
    folder = mnist_with(good_mnist, tmp_path, "train-images-idx3-ubyte")
    (folder / "train-images-idx3-ubyte").symlink_to("/proc/self/mem")
    check(catalogued(request), *data_run(capsys, tmp_path, folder), folder)


def test_mnist_gzip_that_is_not_the_published_file(capsys, tmp_path, request):
    """MNIST has no published checksum of its decompressed files, so a .gz must be the published one."""
    folder = tmp_path / "mnist-gz"
    folder.mkdir()
    for name, shape in MNIST_NAMES.items():
        (folder / (name + ".gz")).write_bytes(gzip.compress(idx_bytes(shape[:1] + (1,) * (len(shape) - 1)), mtime=0))
    code, out, err = data_run(capsys, tmp_path, folder)
    check(catalogued(request), code, out, err, folder)
    assert f"expected {DATASETS['mnist'].files[0].sha256} (published" in err


def _fashion_folder(tmp_path, train_images):
    folder = tmp_path / "fashion"
    folder.mkdir()
    for remote in DATASETS["fashion-mnist"].files:
        (folder / remote.filename).write_bytes(gzip.compress(idx_bytes((3,)), mtime=0))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(train_images)
    return folder


def test_fashion_mnist_truncated_gzip(capsys, tmp_path, request):
    whole = gzip.compress(idx_bytes((100, 28, 28), fill=7), mtime=0)
    folder = _fashion_folder(tmp_path, whole[: len(whole) // 2])
    code, out, err = data_run(capsys, tmp_path, folder, "fashion-mnist")
    check(catalogued(request), code, out, err, folder)


def test_fashion_mnist_corrupted_gzip(capsys, tmp_path, request):
    whole = bytearray(gzip.compress(idx_bytes((100, 28, 28), fill=7), mtime=0))
    whole[-6] ^= 0xFF  # the CRC-32 in the trailer
    folder = _fashion_folder(tmp_path, bytes(whole))
    code, out, err = data_run(capsys, tmp_path, folder, "fashion-mnist")
    check(catalogued(request), code, out, err, folder)
    assert "(the file is corrupted or truncated)" in err


def test_fashion_mnist_wrong_content(capsys, tmp_path, request):
    """A well-formed IDX file that is not Fashion-MNIST's: its checksum gives it away."""
    folder = _fashion_folder(tmp_path, gzip.compress(idx_bytes((100, 28, 28)), mtime=0))
    code, out, err = data_run(capsys, tmp_path, folder, "fashion-mnist")
    check(catalogued(request), code, out, err, folder)
    assert "delete it and get it again" in err


def test_data_dir_that_is_a_file(capsys, tmp_path, request):
    not_a_folder = tmp_path / "mnist.zip"
    not_a_folder.write_bytes(b"PK")
    check(catalogued(request), *data_run(capsys, tmp_path, not_a_folder), tmp_path)


@pytest.mark.parametrize("dataset", ["mnist", "mnist-small"])
def test_data_dir_that_does_not_exist(dataset, good_mnist, capsys, tmp_path, monkeypatch, request):
    """Before the fix, the search went on to $TINYDGL_DATA and the cache and trained on what it found there."""
    monkeypatch.setenv("TINYDGL_DATA", str(good_mnist))  # data elsewhere that must not be used instead
    missing = tmp_path / "no-such-folder"
    code, out, err = data_run(capsys, tmp_path, missing, dataset)
    if dataset == "mnist":
        check(catalogued(request), code, out, err, tmp_path)
    else:
        expect(
            code,
            out,
            err,
            1,
            f"--data-dir {missing} does not exist; mnist-small is bundled with tinydgl and reads no folder",
        )


@pytest.mark.filterwarnings("ignore:.*no published checksum")
def test_a_data_dir_without_the_files_says_where_they_were_found(good_mnist, capsys, tmp_path, monkeypatch, request):
    monkeypatch.setenv("TINYDGL_DATA", str(good_mnist))
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, tmp_path, *SMALL, "--dataset", "mnist", "--data-dir", str(empty), outputs=False)
    check(catalogued(request), code, out, err, empty)
    assert f"note: --data-dir {empty} has no mnist files; they were found in {good_mnist}.\n" in out
    assert f"data read from {good_mnist}\n" in out


def test_the_banner_says_where_the_data_came_from(capsys, tmp_path):
    assert main(["train", *SMALL, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"note: mnist-small is bundled with tinydgl; --data-dir {tmp_path} is not read." in out
    assert f"data read from {ds.MNIST_SMALL_PATH}\n" in out


# --- runs that would quietly do less than asked ----------------------------------------------------------------
def test_diverging_learning_rate_is_said_in_words(tmp_path, request):
    """--lr 1e9 with adam: the second moment overflows to inf, which freezes the weights while the loss stays
    finite (1e32); before the fix NumPy printed 'RuntimeWarning: overflow' with a source path and the run
    exited 0 with a meaningless accuracy. In a fresh interpreter, to see exactly what a person sees."""
    folder = tmp_path / "ckpt"
    result = _run_cli(
        "train",
        *SMALL,
        "--model",
        "cnn",
        "--limit-train",
        "256",
        "--lr",
        "1e9",
        "--checkpoint-dir",
        str(folder),
        "--metrics-json",
        str(tmp_path / "m.json"),
        tmp_path=tmp_path,
    )
    check(catalogued(request), result.returncode, result.stdout, result.stderr, folder)
    assert result.stderr.startswith("tinydgl: error: Training diverged"), result.stderr
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr and ".py" not in result.stderr
    assert not (tmp_path / "m.json").exists()


def test_greedy_says_which_modules_the_epochs_train(capsys, tmp_path):
    """greedy on the mlp has 2 modules, one epoch each: --epochs 1 leaves the second untrained (the catalogue);
    --epochs 3 trains both, the last one longer."""
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


def test_a_checkpoint_is_not_overwritten_without_resume(capsys, tmp_path, request):
    folder = _checkpoint(tmp_path, capsys)
    saved = (folder / "latest.json").read_text()
    code, out, err = run(capsys, tmp_path, *SMALL, "--trainer", "dgl", "--checkpoint-dir", str(folder))
    check(catalogued(request), code, out, err, folder)
    assert (folder / "latest.json").read_text() == saved


@pytest.mark.parametrize(
    "other, differ",
    [
        (["--trainer", "lls"], "(trainer differs)"),
        (["--trainer", "dgl", "--aux", "linear"], "(--aux differs)"),
        (["--trainer", "dgl", "--optimizer", "sgd"], "(optimizer differs)"),
    ],
)
def test_resume_by_another_run_is_refused_naming_both(other, differ, capsys, tmp_path, request):
    folder = _checkpoint(tmp_path, capsys)
    saved = (folder / "latest.json").read_text()
    code, out, err = run(capsys, tmp_path, *SMALL, *other, "--epochs", "3", "--checkpoint-dir", str(folder), "--resume")
    expect(code, out, err, 1, "belongs to another run: it was written by dgl on mlp (mnist-small), adam; this run is")
    if differ == "(trainer differs)":
        check(catalogued(request), code, out, err, folder)
    assert differ in err
    assert (folder / "latest.json").read_text() == saved  # nothing was trained or saved


@pytest.mark.parametrize("damage", ["truncate-arrays", "truncate-record", "edit-record"])
def test_a_damaged_checkpoint_is_refused_and_the_previous_offered(damage, capsys, tmp_path, request):
    folder = _checkpoint(tmp_path, capsys)
    record = folder / "latest.json"
    if damage == "truncate-arrays":
        arrays = folder / "state-epoch0002.npz"
        arrays.write_bytes(arrays.read_bytes()[:500])
    elif damage == "truncate-record":
        record.write_text(record.read_text()[:100])
    else:
        record.write_text(record.read_text().replace('"epoch": 2', '"epoch": 1', 1))
    code, out, err = run(
        capsys, tmp_path, *SMALL, "--trainer", "dgl", "--epochs", "3", "--checkpoint-dir", str(folder), "--resume"
    )
    index = ["truncate-arrays", "truncate-record", "edit-record"].index(damage)  # the catalogue's order
    check(catalogued(request, index), code, out, err, folder)
    assert (
        main(
            [
                "train",
                *SMALL,
                "--trainer",
                "dgl",
                "--epochs",
                "3",
                "--checkpoint-dir",
                str(folder),
                "--resume",
                "previous",
            ]
        )
        == 0
    )
    assert "resumed from" in capsys.readouterr().out


@pytest.mark.parametrize("epochs", ["1", "2"])
def test_resume_with_no_epochs_left_says_nothing_to_do(epochs, capsys, tmp_path, request):
    """Exit 0 (the run asked for exists), nothing trained or written; before the fix: silence, and the old
    metrics printed as if just trained."""
    folder = _checkpoint(tmp_path, capsys)
    saved = (folder / "latest.json").read_text()
    metrics = tmp_path / "m.json"
    code, out, err = run(
        capsys,
        tmp_path,
        *SMALL,
        "--trainer",
        "dgl",
        "--epochs",
        epochs,
        "--checkpoint-dir",
        str(folder),
        "--resume",
        "--metrics-json",
        str(metrics),
        outputs=False,
    )
    if epochs == "1":
        check(catalogued(request), code, out, err, folder)
    assert code == 0
    assert (
        f"tinydgl: nothing to do: the checkpoint in {folder} has already done 2 epoch(s), and --epochs {epochs} "
        f"counts the epochs of the whole run, resumed ones included. To train more, raise it (e.g. --epochs 3); "
        f"nothing was trained or written."
    ) in out
    assert "epoch   " not in out and "test accuracy" not in out and not metrics.exists()
    assert (folder / "latest.json").read_text() == saved


def test_resume_previous_when_there_is_none(capsys, tmp_path, request):
    folder = tmp_path / "one"
    assert main(["train", *SMALL, "--checkpoint-dir", str(folder)]) == 0
    capsys.readouterr()
    code, out, err = run(
        capsys, tmp_path, *SMALL, "--epochs", "2", "--checkpoint-dir", str(folder), "--resume", "previous"
    )
    check(catalogued(request), code, out, err, folder)


def test_a_parallel_run_refuses_a_mid_epoch_checkpoint(capsys, tmp_path, request):
    folder = _checkpoint(tmp_path, capsys, "--checkpoint-every", "1", "--limit-train", "256", "--batch-size", "64")
    meta = json.loads((folder / "previous.json").read_text())
    assert meta["step"] == 3  # epoch 2, batch 3 of 4: the save before the last
    code, out, err = run(
        capsys,
        tmp_path,
        *SMALL,
        "--trainer",
        "dgl",
        "--epochs",
        "3",
        "--limit-train",
        "256",
        "--batch-size",
        "64",
        "--checkpoint-dir",
        str(folder),
        "--resume",
        "previous",
        "--workers",
        "2",
    )
    check(catalogued(request), code, out, err, folder)
