"""The error catalogue: the mistakes a person can make with the `tinydgl` command, each with the message it
prints and its exit status. One table, two readers:

- tests/test_bad_inputs.py runs every case that is a command line (`argv`) and checks its message; a case that
  needs more than a command line (a damaged file, a full disk) names the test that sets it up (`test`), and
  that test checks the message with `check`.
- `python tests/error_catalogue.py` writes docs/errors.md from it; tests/test_bad_inputs.py fails when the page
  differs from what this file writes.

A message is shown from its start, verbatim; `...` stands for text that varies (a checksum, a list that grows)
or that the page leaves out, and `DIR` for a folder: in a command line, an empty folder the test makes.
"""

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@dataclass(frozen=True)
class Case:
    message: str  # what the command prints, from its start ("tinydgl: error: " and the like not included)
    code: int = 1  # the exit status: 2 for argparse's usage errors, 1 for tinydgl's, 0 for a note
    argv: tuple = ()  # the command line after `tinydgl train` (or `compare`), on a small mlp run
    command: str = "train"
    what: str = ""  # what the person did, when the command line alone does not say it
    test: str = ""  # the test that sets the case up and checks it, "file.py::name" outside test_bad_inputs

    def shown(self):
        """The message as it appears: after the usage line (exit 2), on stderr (1) or as a note (0)."""
        return {2: f"tinydgl {self.command}: error: ", 1: "tinydgl: error: ", 0: ""}[self.code] + self.message


def case(message, *argv, code=1, command="train", what=""):
    """A case that is a command line."""
    return Case(message, code, tuple(argv), command, what)


def usage(message, *argv, command="train", what=""):
    """A usage error (argparse: exit 2)."""
    return Case(message, 2, tuple(argv), command, what)


def tested(test, what, message, code=1):
    """A case that `test` sets up and checks."""
    return Case(message, code, what=what, test=test)


SECTIONS = {
    "option values out of range": [
        usage("argument --epochs: must be a positive integer, got 0", "--epochs", "0"),
        usage("argument --epochs: must be a positive integer, got 'two'", "--epochs", "two"),
        usage("argument --batch-size: must be a positive integer, got -5", "--batch-size", "-5"),
        usage("argument --limit-train: must be a positive integer, got 0", "--limit-train", "0"),
        usage("argument --limit-test: must be a positive integer, got -1", "--limit-test", "-1"),
        usage("argument --workers: must be a positive integer, got 0", "--workers", "0"),
        usage("argument --lr: must be positive, got 0", "--lr", "0"),
        usage("argument --lr: must be positive, got -1", "--lr", "-1"),
        usage("argument --lr: must be a positive number, got nan", "--lr", "nan"),
        usage("argument --lr: must be a positive number, got inf", "--lr", "inf"),
        usage("argument --momentum: must be 0 or more, got -0.5", "--momentum", "-0.5"),
        usage("argument --weight-decay: must be 0 or more, got -1", "--weight-decay", "-1"),
        usage("argument --weight-decay: must be a number, 0 or more, got nan", "--weight-decay", "nan"),
        usage("argument --seed: must be 0 or more, got -1", "--seed", "-1"),
        usage("argument --bn-recalibrate: must be an integer, 0 or more, got '2.5'", "--bn-recalibrate", "2.5"),
        usage("argument --label-smoothing: must be in [0, 1), got 1", "--label-smoothing", "1"),
        usage("argument --label-smoothing: must be in [0, 1), got -0.1", "--label-smoothing", "-0.1"),
        usage("argument --temperature: must be positive, got 0", "--trainer", "lls", "--temperature", "0"),
        usage("argument --temperature: must be a positive number, got inf", "--trainer", "lls", "--temperature", "inf"),
        usage("argument --sg-scale: must be positive, got 0", "--trainer", "dni", "--sg-scale", "0"),
        usage(
            "argument --buffer-size: must be a positive integer, got 0", "--trainer", "async-dgl", "--buffer-size", "0"
        ),
        usage("argument --slowdown: must be a positive number, got inf", "--trainer", "async-dgl", "--slowdown", "inf"),
        usage("argument --modules: must be a positive integer, got 0", "--trainer", "dgl", "--modules", "0"),
        usage(
            "argument --boundaries: expected comma-separated integers, got '1.5'",
            "--trainer",
            "dgl",
            "--boundaries",
            "1.5",
        ),
        usage(
            "argument --boundaries: expected comma-separated integers, got ',' (no numbers)",
            "--trainer",
            "dgl",
            "--boundaries",
            ",",
        ),
        usage(
            "argument --interfaces: expected comma-separated integers, got 'a'", "--trainer", "dni", "--interfaces", "a"
        ),
        usage("argument --checkpoint-every: must be a positive integer, got 0", "--checkpoint-every", "0"),
        case(
            "--trainer dni: update_prob is a probability in (0, 1], got 1.5.",
            "--trainer",
            "dni",
            "--update-prob",
            "1.5",
        ),
        case(
            "--trainer dni: update_prob is a probability in (0, 1], got -0.5.",
            "--trainer",
            "dni",
            "--update-prob",
            "-0.5",
        ),
        case(
            "--trainer dni: bp_lambda mixes two gradients and must be in [0, 1], got 1.5.",
            "--trainer",
            "dni",
            "--bp-lambda",
            "1.5",
        ),
        case(
            "--trainer dni: bp_lambda mixes two gradients and must be in [0, 1], got -0.1.",
            "--trainer",
            "dni",
            "--bp-lambda",
            "-0.1",
        ),
        case(
            "--trainer dni: interfaces are indices of blocks followed by a synthesizer, in 0..1",
            "--trainer",
            "dni",
            "--interfaces",
            "9",
        ),
        case("--trainer async-dgl: slowdown must be >= 1", "--trainer", "async-dgl", "--slowdown", "0.5"),
        case(
            "--trainer async-dgl: slow_module must be a module index in 0..1",
            "--trainer",
            "async-dgl",
            "--slow-module",
            "5",
        ),
        case(
            "--trainer dgl: --modules must be between 1 and 2 (the model's hidden blocks), got 99.",
            "--trainer",
            "dgl",
            "--modules",
            "99",
        ),
        case("--trainer dgl: module boundaries must lie in 1..1", "--trainer", "dgl", "--boundaries", "5"),
    ],
    "unknown names": [
        usage("argument --model: unknown model 'vgg16'; choose one of: mlp, cnn, smallconv", "--model", "vgg16"),
        usage("argument --trainer: unknown trainer 'backprop'; choose one of: bp, dni, ...", "--trainer", "backprop"),
        usage(
            "argument --optimizer: unknown optimizer 'lamb'; choose one of: sgd, adam, adamw, ...",
            "--optimizer",
            "lamb",
        ),
        usage(
            "argument --dataset: unknown dataset 'cifar100'; choose one of: mnist-small, mnist, ...",
            "--dataset",
            "cifar100",
        ),
        usage("argument --backend: unknown backend 'tpu'; choose one of: numpy, cupy", "--backend", "tpu"),
        usage(
            "argument --lr-schedule: unknown lr schedule 'warmup'; choose one of: constant, cooldown, ...",
            "--lr-schedule",
            "warmup",
        ),
        usage(
            "argument --trainers: unknown trainer(s) 'magic'; choose from: bp, dni, ...",
            "--trainers",
            "bp,magic",
            command="compare",
        ),
        usage(
            "argument --trainers: unknown trainer(s) 'dlg'; choose from: bp, dni, cdni, greedy, dgl, ..., fg, "
            "pepita; did you mean dgl?",
            "--trainers",
            "bp,dlg",
            command="compare",
        ),
        usage(
            "argument --trainers: bp listed twice in 'bp,bp'; name each trainer once",
            "--trainers",
            "bp,bp",
            command="compare",
        ),
        case(
            "--trainer dgl: Unknown auxiliary head 'resnet'; choose one of: mlp-sr, mlp, cnn, linear, pred, sim, "
            "predsim.",
            "--trainer",
            "dgl",
            "--aux",
            "resnet",
        ),
        case(
            "--trainer lls: Unknown waveform 'triangle'; choose one of: sin, square, cosine, random.",
            "--trainer",
            "lls",
            "--waveform",
            "triangle",
        ),
        case(
            "--trainer dni: Unknown synthesizer 'rnn'; choose one of: auto, linear, mlp, conv, mlp1.",
            "--trainer",
            "dni",
            "--synthesizer",
            "rnn",
        ),
        case(
            "--trainer async-dgl: Unknown schedule 'fifo'; choose one of: random, round-robin.",
            "--trainer",
            "async-dgl",
            "--schedule",
            "fifo",
        ),
        case(
            "--trainer async-dgl: Unknown buffer codec 'zip'; choose 'vq' (vector quantisation) or leave it unset "
            "(raw).",
            "--trainer",
            "async-dgl",
            "--buffer-codec",
            "zip",
        ),
    ],
    "misspelt options and names (a one-line usage, and what was probably meant)": [
        usage("unrecognized arguments: --trainers bp. Did you mean --trainer?", "--trainers", "bp"),
        usage("unrecognized arguments: --limit_train 64. Did you mean --limit-train?", "--limit_train", "64"),
        usage(
            "unrecognized arguments: --trainers=bp --no-progess. Did you mean --trainer (for --trainers), "
            "--no-progress (for --no-progess)?",
            "--trainers=bp",
            "--no-progess",
        ),
        usage("unrecognized argument: --xyzzy. tinydgl train --help lists the options.", "--xyzzy"),
        usage("unrecognized argument: --alignmnt. Did you mean --alignment?", "--alignmnt", command="compare"),
        usage(
            "argument --trainer: unknown trainer 'lss'; choose one of: bp, dni, cdni, greedy, dgl, async-dgl, lls, "
            "...; did you mean lls?",
            "--trainer",
            "lss",
        ),
        usage(
            "argument --optimizer: unknown optimizer 'adamw_sf'; choose one of: ...; did you mean adamw-sf?",
            "--optimizer",
            "adamw_sf",
        ),
    ],
    "options that do not fit together": [
        case(
            "--momentum applies to --optimizer sgd (adam and the schedule-free optimizers have their own averaging; "
            "nag is Nesterov's momentum), not adam.",
            "--momentum",
            "0.9",
        ),
        case(
            "--lr-schedule cooldown applies to in-process runs; the parallel engines train at a constant rate (leave "
            "--workers out, or the schedule).",
            "--trainer",
            "dgl",
            "--workers",
            "2",
            "--lr-schedule",
            "cooldown",
        ),
        case(
            "--hidden, --activation apply to --model mlp only: add --model mlp, or leave them out for --model cnn.",
            "--model",
            "cnn",
            "--hidden",
            "100",
            "--activation",
            "tanh",
        ),
        case(
            "--temperature do(es) not apply to --trainer bp: leave it out, or choose a trainer that has it (tinydgl "
            "train --help).",
            "--trainer",
            "bp",
            "--temperature",
            "0.5",
        ),
        case(
            "--aux, --sg-scale do(es) not apply to --trainer lls: leave them out, ...",
            "--trainer",
            "lls",
            "--aux",
            "mlp",
            "--sg-scale",
            "2",
        ),
        case(
            "--temperature applies to none of --trainers bp,dgl (it applies to lls, ...): add one of those or leave "
            "--temperature out.",
            "--trainers",
            "bp,dgl",
            "--temperature",
            "0.5",
            command="compare",
        ),
        case(
            "--n-push applies to --parallel downpour --transport shm only: add --parallel downpour --workers J, or "
            "leave it out.",
            "--n-push",
            "2",
        ),
        case(
            "--n-fetch applies to --parallel downpour --transport shm only, not --parallel module --transport shm: "
            "leave it out.",
            "--trainer",
            "lls",
            "--workers",
            "2",
            "--n-fetch",
            "2",
        ),
        case(
            "--devices applies to --parallel module --transport shm only: add --parallel module --workers J, or "
            "leave it out.",
            "--devices",
            "0",
        ),
        case("--parallel sync runs on worker processes: say how many with --workers J.", "--parallel", "sync"),
        case(
            "--parallel sync runs on worker processes: say how many with --workers J.",
            "--trainer",
            "dp-sync",
            what="(the old spelling of `--parallel sync`)",
        ),
        case(
            "The module-parallel engine runs local trainers and synthetic gradients: dni, cdni, dgl, ...; got 'bp'. "
            "Choose one of those, or run 'bp' with --parallel sync or downpour.",
            "--trainer",
            "bp",
            "--parallel",
            "module",
            "--workers",
            "2",
        ),
        case(
            "The module-parallel engine runs local trainers and synthetic gradients: dni, cdni, dgl, ...; got 'bp'. "
            "Choose one of those, or run 'bp' with --parallel sync or downpour.",
            "--trainer",
            "bp",
            "--workers",
            "2",
            what="(`--workers` alone is the old spelling of `--parallel module`)",
        ),
        case(
            "The module-parallel engine runs local trainers and synthetic gradients: ...; got 'greedy' (greedy trains "
            "one module at a time). Choose one of those, or train 'greedy' in-process.",
            "--trainer",
            "greedy",
            "--parallel",
            "module",
            "--workers",
            "2",
        ),
        case(
            "Synchronous data-parallel SGD runs backprop in every worker, each on its shard of every batch: bp "
            "(BackpropTrainer); got 'dgl'. Choose one of those, or run 'dgl' with --parallel module.",
            "--trainer",
            "dgl",
            "--parallel",
            "sync",
            "--workers",
            "2",
        ),
        case(
            "Downpour SGD has no 'mpi' transport; it runs over shm: choose --transport shm.",
            "--parallel",
            "downpour",
            "--transport",
            "mpi",
        ),
        case(
            "--trainer dp-sync means --parallel sync, but --parallel module was given: say only --parallel.",
            "--trainer",
            "dp-sync",
            "--parallel",
            "module",
            "--workers",
            "2",
        ),
        case(
            "--workers 9: --trainer dgl on mlp has 2 module(s), and each worker runs at least one: use --workers 2 or "
            "fewer.",
            "--trainer",
            "dgl",
            "--workers",
            "9",
        ),
        case(
            "--workers 2: devices=[0] needs the CuPy backend (--backend cupy); the active backend is 'numpy'.",
            "--trainer",
            "dgl",
            "--workers",
            "2",
            "--devices",
            "0",
            what="(on NumPy)",
        ),
    ],
    "backends": [
        tested(
            "test_backend_cupy_without_cupy",
            "`--backend cupy` without CuPy installed",
            "The 'cupy' backend needs CuPy. Install it with: pip install ...[gpu]...",
        ),
        tested(
            "test_backend_cupy_without_a_gpu",
            "`--backend cupy` (also with `--workers 2 --devices 0`) where CuPy is installed but there is no GPU",
            "The 'cupy' backend found no GPU: CuPy is installed, but CUDA reports cudaErrorInsufficientDriver: ...",
        ),
        tested(
            "test_tinydgl_backend_variable_with_a_bad_name",
            "`TINYDGL_BACKEND=bogus tinydgl train ...`",
            "TINYDGL_BACKEND='bogus' is not a backend: set it to one of numpy, cupy, array_api_strict, or unset it",
        ),
        tested(
            "test_tinydgl_backend_variable_cupy_without_a_gpu",
            "`TINYDGL_BACKEND=cupy tinydgl train ...` without a GPU",
            "TINYDGL_BACKEND=cupy: The 'cupy' backend found no GPU",
        ),
    ],
    "output paths (checked before any work)": [
        case(
            "--metrics-json /proc/tinydgl-x/m.json: cannot write there (/proc/tinydgl-x: No such file or directory). "
            "Choose a path in a folder you can write to; nothing was trained.",
            "--metrics-json",
            "/proc/tinydgl-x/m.json",
            what="(a folder that cannot be made)",
        ),
        tested(
            "test_metrics_json_under_a_file",
            "`--metrics-json DIR/notes.txt/run/m.json` (a file where a folder should be)",
            "--metrics-json DIR/notes.txt/run/m.json: cannot write there (DIR/notes.txt is a file, not a folder). ...",
        ),
        case(
            "--metrics-json DIR is a folder; give a file name (e.g. DIR/run.json); nothing was trained.",
            "--metrics-json",
            "DIR",
        ),
        case("--plot DIR is a folder; give a file name (e.g. DIR/run.png); nothing was trained.", "--plot", "DIR"),
        case(
            "--plot DIR/curves.xyz: cannot write .xyz images (Format 'xyz' is not supported ...). Use .png (or .pdf, "
            ".svg); nothing was trained.",
            "--plot",
            "DIR/curves.xyz",
        ),
        case(
            "--plot DIR/curves has no extension, which names the image format: end it in .png (or .pdf, .svg, ...); "
            "nothing was trained.",
            "--plot",
            "DIR/curves",
        ),
        case(
            "--metrics-json and --plot both name DIR/run.png: the plot would overwrite the metrics. Give them "
            "different names (e.g. run.json and run.png); nothing was trained.",
            "--metrics-json",
            "DIR/run.png",
            "--plot",
            "DIR/run.png",
        ),
        case(
            "--metrics-json got an empty name; give a file name, or leave --metrics-json out; nothing was trained.",
            "--metrics-json",
            "",
        ),
        tested(
            "test_a_plot_beside_the_plot_that_is_a_folder",
            "`--trainer dgl --workers 2 --plot DIR/run.png` where "
            "`DIR/run-timeline.png` is a folder (likewise `compare --alignment` and `DIR/run-alignment.png`)",
            "--plot DIR/run.png also writes the worker timeline to DIR/run-timeline.png, which is a folder: "
            "choose another --plot name, or move that folder; nothing was trained.",
        ),
    ],
    "data files (`--dataset mnist` or `fashion-mnist --data-dir DIR`)": [
        tested(
            "test_data_dir_that_is_a_file",
            "`--data-dir DIR/mnist.zip` (a file, not a folder)",
            "--data-dir DIR/mnist.zip is a file; give the folder that holds the mnist files (or leave --data-dir "
            "out to use $TINYDGL_DATA or the cache).",
        ),
        tested(
            "test_data_dir_that_does_not_exist",
            "`--data-dir DIR/no-such-folder` (refused, not created: the cache would silently supply the data instead)",
            "--data-dir DIR/no-such-folder does not exist; give "
            "the folder that holds the mnist files (make it first to download into it), or leave --data-dir out "
            "to use $TINYDGL_DATA or the cache; nothing was trained.",
        ),
        tested(
            "test_mnist_truncated_file",
            "MNIST: a truncated (uncompressed) file",
            "DIR/train-images-idx3-ubyte: size failed: expected 47040016 bytes (decompressed "
            "train-images-idx3-ubyte.gz), got ...",
        ),
        tested(
            "test_mnist_wrong_magic_number",
            "MNIST: a file with the wrong magic number",
            "DIR/t10k-images-idx3-ubyte: IDX magic number failed: expected 00 00 <type in ...> <ndim >= 1>, got "
            "89 50 4e 47 (not an IDX file)",
        ),
        tested(
            "test_mnist_header_count_disagrees_with_the_data",
            "MNIST: a header whose count disagrees with the data",
            "DIR/train-labels-idx1-ubyte: IDX size failed: the header says shape (50000,) (50000 bytes of "
            "data) but the file has 60000: has trailing bytes",
        ),
        tested(
            "test_mnist_label_count_differs_from_image_count",
            "MNIST: labels that do not match the images one to one",
            "DIR/train-labels-idx1-ubyte: label count failed: expected 60000 labels (one per image in "
            "DIR/train-images-idx3-ubyte), got shape (2, 29998)",
        ),
        tested(
            "test_mnist_label_out_of_range",
            "MNIST: a label 12 (10 classes)",
            "DIR/t10k-labels-idx1-ubyte: label "
            "range failed: labels must be 0..9 (10 classes), found 12 at index 5 (1 of 10,000 labels out of range)",
        ),
        tested(
            "test_mnist_negative_labels",
            "MNIST: signed labels (IDX type 09, e.g. -1)",
            "DIR/train-labels-idx1-ubyte: label type failed: expected uint8 labels (IDX type code 08, as "
            "published), got int8",
        ),
        tested(
            "test_mnist_folder_where_a_file_should_be",
            "MNIST: a folder where a file should be",
            "DIR/train-images-idx3-ubyte: reading failed: this is a folder, but tinydgl expects the file "
            "train-images-idx3-ubyte.gz here",
        ),
        tested(
            "test_mnist_file_that_fails_to_read",
            "MNIST: a file that cannot be read (an I/O error; likewise `chmod 000`: Permission denied)",
            "DIR/train-images-idx3-ubyte: reading failed: cannot read the file "
            "(Input/output error); check its permissions",
        ),
        tested(
            "test_mnist_gzip_that_is_not_the_published_file",
            "MNIST: a `.gz` that is not the published file",
            "DIR/train-images-idx3-ubyte.gz: SHA-256 failed: expected 440fcabf... (published "
            "train-images-idx3-ubyte.gz)",
        ),
        tested(
            "test_fashion_mnist_truncated_gzip",
            "Fashion-MNIST: a truncated `.gz`",
            "DIR/train-images-idx3-ubyte.gz: gzip decompression failed: Compressed file ended before the "
            "end-of-stream marker was reached (the file is corrupted or truncated)",
        ),
        tested(
            "test_fashion_mnist_corrupted_gzip",
            "Fashion-MNIST: a corrupted `.gz`",
            "DIR/train-images-idx3-ubyte.gz: gzip decompression failed: CRC check failed ...",
        ),
        tested(
            "test_fashion_mnist_wrong_content",
            "Fashion-MNIST: a well-formed file with other content",
            "DIR/train-images-idx3-ubyte.gz: SHA-256 failed: neither the file (...) nor its decompressed content "
            "(...) matches the published train-images-idx3-ubyte.gz",
        ),
    ],
    "runs that would quietly learn nothing, or less than asked": [
        tested(
            "test_diverging_learning_rate_is_said_in_words",
            "`--model cnn --lr 1e9 --checkpoint-dir DIR` (numbers overflow in a step)",
            "Training diverged: numbers overflowed to inf in a training step (the loss was "
            "...) at epoch 1, step ...; the learning rate 1e+09 is likely too high: try a smaller one (--lr). No "
            "checkpoint was written to DIR. The default for --optimizer adam is 0.002: leave --lr out to use it.",
        ),
        case(
            "Training diverged: the loss grew to ... at the run's first step) at epoch 1, step ...; the learning rate "
            "1e+09 is likely too high: try a smaller one (--lr). The default for --optimizer adam is 0.002: leave "
            "--lr out to use it.",
            "--limit-train",
            "256",
            "--lr",
            "1e9",
            what="(the loss grows 1000-fold)",
        ),
        case(
            "Training diverged: the loss became ... No checkpoint was written to DIR. ...",
            "--batch-size",
            "16",
            "--lr",
            "1e30",
            "--checkpoint-dir",
            "DIR",
            what="(after a checkpoint: `... The last good checkpoint (after epoch 1) is in DIR.`)",
        ),
        case(
            "greedy trains its 2 modules one after another, 1 epoch(s) each (--epochs-per-module 1): module 1: epoch "
            "1. Note: with --epochs 1, module 2 keeps its random initial weights, and the test uses module 1's "
            "auxiliary head. To train both modules, use --epochs 2.",
            "--trainer",
            "greedy",
            code=0,
        ),
        tested(
            "test_resume_with_no_epochs_left_says_nothing_to_do",
            "`--resume --epochs 1` where the checkpoint in "
            "DIR has done 2 (exit 0: the run asked for exists, so a re-queued job succeeds)",
            "tinydgl: nothing to "
            "do: the checkpoint in DIR has already done 2 epoch(s), and --epochs 1 counts the epochs of the whole "
            "run, resumed ones included. ...",
            code=0,
        ),
        tested(
            "test_a_data_dir_without_the_files_says_where_they_were_found",
            "`--dataset mnist --data-dir DIR` "
            "without the files, found elsewhere (`$TINYDGL_DATA`, the cache); every run's second line says `data "
            "read from ...`",
            "note: --data-dir DIR has no mnist files; they were found in ...",
            code=0,
        ),
    ],
    "checkpoints": [
        case("--resume needs --checkpoint-dir (the directory the first run saved to).", "--resume"),
        case(
            "No checkpoint to resume from: DIR/latest.json does not exist. Run without --resume first.",
            "--resume",
            "--checkpoint-dir",
            "DIR",
        ),
        case("--checkpoint-every needs --checkpoint-dir (where to write the checkpoints).", "--checkpoint-every", "10"),
        tested(
            "test_a_checkpoint_is_not_overwritten_without_resume",
            "`--checkpoint-dir DIR` that holds a checkpoint, without `--resume`",
            "--checkpoint-dir DIR already holds a checkpoint. Add --resume to "
            "continue that run, or choose another folder; nothing was overwritten.",
        ),
        tested(
            "test_resume_by_another_run_is_refused_naming_both",
            "`--resume` by another trainer, optimizer or parameter-shaping option (`--aux`, `--modules`, ...)",
            "DIR/latest.json belongs to another run: it "
            "was written by dgl on mlp (mnist-small), adam; this run is lls on mlp (mnist-small), adam (trainer "
            "differs). Resume with the options it was started with, or choose another --checkpoint-dir.",
        ),
        tested(
            "test_a_damaged_checkpoint_is_refused_and_the_previous_offered",
            "`--resume` with a truncated or corrupted `.npz`",
            "DIR/state-epoch0002.npz does not match the SHA-256 recorded in latest.json "
            "(recorded ..., found ...): the file is truncated or corrupted. The previous checkpoint (after epoch 1) "
            "is intact and kept: resume from it with --resume previous.",
        ),
        tested(
            "test_a_damaged_checkpoint_is_refused_and_the_previous_offered",
            "`--resume` with a truncated `latest.json`",
            "DIR/latest.json is not a complete checkpoint record (truncated or corrupted...). The "
            "previous checkpoint (after epoch 1) is intact and kept: resume from it with --resume previous.",
        ),
        tested(
            "test_a_damaged_checkpoint_is_refused_and_the_previous_offered",
            "`--resume` with an edited `latest.json`",
            "DIR/latest.json does not match its own SHA-256 (recorded ..., found ...): the record "
            "was changed or damaged. The previous checkpoint (after epoch 1) is intact and kept: resume from it "
            "with --resume previous.",
        ),
        tested(
            "test_resume_previous_when_there_is_none",
            "`--resume previous` after a single save",
            "No previous checkpoint in DIR: DIR/previous.json does not exist (a run keeps one from its second save "
            "on).",
        ),
        tested(
            "test_a_parallel_run_refuses_a_mid_epoch_checkpoint",
            "`--workers 2 --resume previous` of a mid-epoch checkpoint (`--checkpoint-every`, in-process)",
            "DIR holds a mid-epoch checkpoint (at epoch 2, batch "
            "3), written by an in-process run; the parallel engines resume at epoch boundaries only. ...",
        ),
    ],
    "shared folders, full disks, memory": [
        tested(
            "test_checkpoint_lock.py::test_a_second_run_is_refused_while_the_first_holds_the_folder",
            "`--checkpoint-dir DIR` while another run writes there",
            "DIR is in use by another run: pid ... on "
            "host ..., started ...: tinydgl train --trainer bp ... (bp on mlp (mnist-small)). ...",
        ),
        tested(
            "test_checkpoint_lock.py::test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note",
            "`--checkpoint-dir DIR` after a run there was killed (SIGKILL)",
            "note: DIR/lock.json was left by pid "
            "... on host ..., which is no longer running (it was killed or crashed); this run takes the folder "
            "over.",
            code=0,
        ),
        tested(
            "test_full_disk_and_memory.py::test_a_full_disk_while_checkpointing_stops_the_run_and_keeps_the_"
            "earlier_checkpoint",
            "the disk fills up while a checkpoint is written",
            "Could not write the checkpoint after epoch 2 to DIR: the disk is full (No space left on device). The checkpoint after epoch 1 is intact there and "
            "stays the latest. Training stopped: free some space, then run the same command with --resume to "
            "continue from it.",
        ),
        tested(
            "test_full_disk_and_memory.py::test_compare_on_a_full_disk_saves_the_metrics_elsewhere",
            "the disk fills up before `--metrics-json` / `--plot` are written (if saving elsewhere fails too, the "
            "metrics are printed on stdout)",
            "could not write the metrics to DIR/m.json (the disk is full (No "
            "space left on device)); saved to ... instead. ...",
        ),
        tested(
            "test_full_disk_and_memory.py::test_a_batch_too_large_for_the_free_memory_is_refused_before_training",
            "`--model cnn --batch-size 4000` where one step needs more memory than is free (measured before "
            "training on a copy of the trainer, against MemAvailable, the cgroup's limit and `ulimit -v`)",
            "--batch-size 4000 needs about ... but only 20.0 MB is free (MemAvailable in /proc/meminfo): use a "
            "smaller batch, e.g. --batch-size ...; nothing was trained.",
        ),
        tested(
            "test_full_disk_and_memory.py::test_running_out_of_memory_while_training_names_the_batch_size",
            "memory runs out while training all the same (NumPy's or CuPy's)",
            "out of memory with --batch-size "
            "64 (Unable to allocate ...). ... use a smaller batch, e.g. --batch-size 16.",
        ),
    ],
}
CASES = [c for cases in SECTIONS.values() for c in cases]
COMMAND_LINES = [c for c in CASES if not c.test]


def by_test(name):
    """The cases test `name` checks (a bare name for tests/test_bad_inputs.py, "file.py::name" elsewhere)."""
    found = [c for c in CASES if c.test == name]
    assert found, f"no case in tests/error_catalogue.py names the test {name}"
    return found


def catalogued(request, index=0):
    """The case the running test checks (pytest's `request`): the one that names it (the `index`-th if several)."""
    name = request.node.originalname
    if request.node.path.name != "test_bad_inputs.py":
        name = f"{request.node.path.name}::{name}"
    return by_test(name)[index]


def check(case, code, out, err, folder=None):
    """Assert that a run (exit `code`, stdout `out`, stderr `err`) printed `case`'s message, with DIR = `folder`,
    in its style: after a one-line usage (exit 2), alone on stderr (1), or on a line of stdout (0)."""
    assert code == case.code, err
    assert "Traceback" not in err and "Traceback" not in out, err
    pattern = ".*?".join(re.escape(piece) for piece in case.shown().split("..."))
    if folder is not None:
        pattern = pattern.replace("DIR", re.escape(str(folder)))
    if case.code == 2:
        short = f"usage: tinydgl {case.command} [options]  (tinydgl {case.command} --help lists them)\n"
        assert err.startswith(short) and len(err.splitlines()) == 2, err
        assert re.match(re.escape(short) + pattern, err, re.S), f"expected {case.shown()!r}, got:\n{err}"
    elif case.code == 1:
        assert err.count("tinydgl: error:") == 1, err
        assert re.search(f"^{pattern}", err, re.S | re.M), f"expected {case.shown()!r}, got:\n{err}"
    else:
        assert re.search(f"^{pattern}", out, re.S | re.M), f"expected {case.shown()!r}, got:\n{out}"


def cell(text):
    """`text` as inline code in a table cell."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render():
    """docs/errors.md, from SECTIONS."""
    lines = [HEADER, "| what you did | what it prints (from its start) | exit |", "| --- | --- | --- |"]
    for title, cases in SECTIONS.items():
        lines.append(f"| **{title}** | | |")
        for c in cases:
            did = (
                c.what
                if c.test
                else " ".join(
                    [cell(shlex.join(([c.command] if c.command != "train" else []) + list(c.argv))), c.what]
                ).strip()
            )
            lines.append(f"| {did} | {cell(c.shown())} | {c.code} |")
    return "\n".join(lines) + "\n" + FOOTER


HEADER = """# When a command goes wrong

<!-- Written by `python tests/error_catalogue.py` from the table there; edit that, not this page. -->

Every mistake in a command gets one message and a non-zero exit, never a Python traceback, and leaves nothing
that looks finished: no metrics JSON, no plot, no checkpoint. Mistakes in an option's value are argparse
usage errors (exit 2; the message follows a one-line `usage:`, with "did you mean" for a misspelt option or
name); everything else is `tinydgl: error: ...` (exit 1), printed before any training wherever it can be
known before it. Each row is checked by a test: the command lines run as `tinydgl train` (or `compare`) on a
small mlp run. `DIR` is a folder, `...` text that varies or is left out here; most messages go on after what
is shown, with what to do.
"""
FOOTER = """
Not errors: a `--batch-size` larger than the training set trains on one smaller batch per epoch (no loader
drops the last batch), and `dp-sync` gives a worker whose shard of a small batch is empty weight 0. Missing
data files (`--dataset mnist` with nothing in `--data-dir`) give the "Dataset 'mnist' ... is not available"
message described under [Datasets](commands.md#datasets) ("No data and no network?").
"""

if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE} ({len(CASES)} cases)", file=sys.stderr)
