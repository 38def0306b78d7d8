"""The catalogue of the course: its assignments and their tasks, one entry each.

To add a task: mark its solution in the library (`# BEGIN SOLUTION <id>`, `# hint: ...` lines, the code,
`# END SOLUTION`), add one `Task(...)` to TASKS below (its id starts with its assignment's, `a5-...` for A5),
and mark its tests in tests/test_assignments_tasks.py with `@task("<id>")`. A new assignment is one
`Assignment(...)` in ASSIGNMENTS. `tinydgl assignments check` says what is missing.
"""

from dataclasses import dataclass

from .layout import AssignmentError


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    lessons: tuple  # lesson files (lessons/...) to read first
    intro: str


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    what: str  # what to implement, for the handout (the hint is in the code's marker)
    points: int = 10

    @property
    def assignment(self):
        return self.id.split("-")[0].upper()

    @property
    def marker(self):
        return marker_name(self.id)


ASSIGNMENTS = (
    Assignment(
        "A1",
        "Layers and their gradients",
        ("02-linear-softmax-gradcheck.md", "03-convolution.md", "04-pooling-relu-batchnorm.md"),
        "Every layer is a pair of functions: `forward` returns `(out, cache)`, `backward(dout, cache)` returns "
        "the gradients of its inputs. Write the backward passes (and the naive convolution) and check each one "
        "numerically: a gradient is right when it matches a central difference.",
    ),
    Assignment(
        "A2",
        "Backprop versus synthetic gradients",
        ("05-backprop-and-locks.md", "06-synthetic-gradients.md"),
        "Where does each block's gradient come from? In backprop, from the block above, which locks every "
        "block until the whole network has run. DNI replaces it by a synthesizer's prediction, trained by "
        "regression on what the block above sends back. Write the backprop step, the regression loss, and "
        "the two places where DNI decides a gradient.",
    ),
    Assignment(
        "A3",
        "Local learning: DGL and LLS",
        ("07-greedy-and-dgl.md", "09-lls.md"),
        "Cut the network into modules that each learn from a loss of their own, so that no gradient crosses "
        "a module boundary. Write how the network is cut, the local update every local method shares, and "
        "LLS's fixed basis of waves with the normalisation in front of it.",
    ),
    Assignment(
        "A4",
        "Feedback alignment",
        ("11-feedback-alignment.md",),
        "Send the error down through fixed random matrices instead of the transposed weights, and measure how "
        "close that comes to backprop. Write how DFA (and sDFA) hands the output error to every hidden block, "
        "DRTP's target made of the label alone, and the cosine with which the alignment probe compares a "
        "method's gradient with backprop's.",
    ),
    Assignment(
        "A5",
        "Learning with forward passes only",
        ("13-forward-only.md",),
        "Learn with no backward pass through the network. Write a layer's forward-mode derivative (its JVP), "
        "the forward-gradient estimate built from directional derivatives, and PEPITA's update from two "
        "forward passes.",
    ),
)

TASKS = (
    Task(
        "a1-linear-backward",
        "Linear layer: backward",
        "`linear_backward(dout, cache, compute_dx)`: the gradients of `out = x @ w + b` with respect to x, w and b "
        "(dx is None when `compute_dx=False`, db is None without a bias).",
    ),
    Task(
        "a1-relu-backward",
        "ReLU: backward",
        "`relu_backward(dout, cache)`: pass the gradient where the input was positive (0 at x == 0, as PyTorch does); "
        "keep dout's dtype.",
    ),
    Task(
        "a1-softmax-ce",
        "Softmax cross-entropy and its gradient",
        "`softmax_cross_entropy(logits, y, label_smoothing)`: the mean cross-entropy of softmax(logits) against the "
        "(optionally smoothed) one-hot labels, computed stably with `log_softmax`, and dlogits = (softmax - target) / N.",
    ),
    Task(
        "a1-conv-naive-forward",
        "Convolution with loops: forward",
        "`conv2d_forward_naive`: four nested loops over images, filters and output pixels, with stride, zero padding "
        "and groups. It is the reference the fast im2col convolution is tested against.",
    ),
    Task(
        "a1-conv-naive-backward",
        "Convolution with loops: backward",
        "`conv2d_backward_naive`: scatter each output pixel's gradient back to its input patch (dx) and to its "
        "filter (dw); db sums dout.",
    ),
    Task(
        "a1-maxpool-naive-backward",
        "Max pooling with loops: backward",
        "`maxpool2d_backward_naive`: each window's gradient goes to the first position of its maximum; overlapping "
        "windows add up.",
    ),
    Task(
        "a1-batchnorm-backward",
        "Batch norm: backward in training mode",
        "`batchnorm_backward`: in training mode the batch statistics depend on every input, which gives "
        "dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout * x_hat)) per channel. dgamma and dbeta are "
        "given; build dx in the channels-last `rows` layout the function already uses.",
        points=15,
    ),
    Task(
        "a2-bp-train-step",
        "The backprop training step",
        "`BackpropTrainer.train_step`: forward through every block, `self.output_loss` at the top (softmax "
        "cross-entropy; feedback alignment's trainers take this step with theirs), backward from "
        "the top block down (each block's input gradient is the output gradient of the block below; the first block "
        "needs none), then one optimizer step. Return the loss.",
    ),
    Task(
        "a2-mse-loss",
        "Mean squared error, the synthesizers' loss",
        "`mse_loss(pred, target)`: the mean over all elements of (pred - target)^2 as a Python float, and its "
        "gradient with pred's shape.",
    ),
    Task(
        "a2-dni-gradient",
        "DNI: where a group's gradient comes from",
        "`DNITrainer._gradient(i, from_above)`: the true loss gradient for the top group; for the others the "
        "synthesizer's prediction (mixed with `from_above` under BP(lambda)), scaled by `sg_scale` and converted "
        'from per-example units (lesson 6, "Units: per-example gradients").',
    ),
    Task(
        "a2-dni-synthesizer-target",
        "DNI: the synthesizers' regression target",
        "In `DNITrainer._update_group`: what group i sends back (dx) is the regression target of the synthesizer "
        "below it, M_(i-1), in per-example units and without `sg_scale`. Train M_(i-1) on it and return it.",
    ),
    Task(
        "a3-split-blocks",
        "Cutting the network into modules",
        "`split_blocks(num_hidden, modules, boundaries)`: consecutive groups of block indices, either starting at "
        "the given boundaries or K groups as equal as possible (earlier ones larger); one module per block by "
        "default. Impossible requests raise a ValueError that says what is allowed.",
    ),
    Task(
        "a3-local-step",
        "The local update",
        "`LocalModule.step(x, y)`: forward the module's body, take its local loss, backpropagate through the body "
        "only (no gradient reaches the input: that is what unlocks the modules), step its optimizer, and return "
        "the loss and the output.",
    ),
    Task(
        "a3-l2-normalize-backward",
        "L2 normalisation: backward",
        "`l2_normalize_backward`: the gradient of out = x / ||x|| per row, (dout - out * <dout, out>) / ||x||, and "
        "dout / eps for rows whose norm was below eps.",
    ),
    Task(
        "a3-lls-basis",
        "LLS: the fixed basis of waves",
        "`lls_basis(n_classes, d, waveform, rng)`: the matrix B of the docstring for the sin, square, cosine and "
        "random waveforms.",
    ),
    Task(
        "a4-dfa-signal",
        "DFA: the output error, straight to every hidden block",
        "`DFATrainer.train_step`, after the forward pass and the classifier's true gradient (both given): "
        "project the error signal (`self.error_signal`: e for DFA, its sign for sDFA) through each hidden block's "
        "fixed matrix B_l and back-propagate it inside that block only. No gradient crosses from a block to the one "
        "below, and no block computes its input gradient.",
    ),
    Task(
        "a4-drtp-target",
        "DRTP: a target made of the label",
        "`RandomTargetModule.local_loss(out, y)`: DRTP's hidden block has no loss (return NaN) and learns from "
        "delta = onehot(y) @ B / N, in the block's output shape and dtype.",
    ),
    Task(
        "a4-alignment-cosine",
        "The alignment probe's cosine",
        "`block_cosines(model, handed, true)`: for each block, the cosine between the concatenation of all its "
        "handed parameter gradients and that of its true ones (one vector each, not a cosine per parameter), "
        "computed in float64; NaN when either vector is zero. (Blocks without parameters, or with a parameter "
        "that got no gradient, are handled above your code.)",
    ),
    Task(
        "a5-linear-jvp",
        "Linear layer: forward mode",
        "`linear_jvp(cache, dx, dw, db)`: the output tangent of `out = x @ w + b` for the tangents of x, w and b "
        "(each may be None: it does not move), by the product rule; None when nothing moves.",
    ),
    Task(
        "a5-forward-gradient",
        "The forward-gradient estimate",
        "In `ForwardGradientModule._weight_perturbation`, once the random tangents are set: the loss's slope along "
        "them (one forward-mode pass, `jvp`, no backward) and each parameter's estimate, slope times its tangent, "
        "averaged over the `directions` directions.",
    ),
    Task(
        "a5-pepita-update",
        "PEPITA: two forward passes and the update",
        "`PEPITATrainer.train_step`, after the clean pass (given): the pass on the input modulated by the projected "
        "error, then each hidden block's gradient from the difference of its two outputs and the last block's "
        "from the modulated pass's error, each through the block's Linear layer (no input gradients).",
    ),
)
TASKS_BY_ID = {t.id: t for t in TASKS}


def marker_name(task_id):
    """The pytest marker of a task: `a1-relu-backward` -> `task_a1_relu_backward`."""
    return "task_" + task_id.replace("-", "_")


def assignment_marker(assignment_id):
    """The pytest marker of every task of an assignment: `A1` -> `assignment_a1`."""
    return "assignment_" + assignment_id.lower()


def select_tasks(assignments=None, task_ids=None):
    """The tasks of the given assignments (e.g. ["A1"]) and task ids: all tasks when neither is given."""
    chosen = [
        t
        for t in TASKS
        if (not assignments or t.assignment in {a.upper() for a in assignments}) and (not task_ids or t.id in task_ids)
    ]
    unknown = sorted(set(task_ids or ()) - set(TASKS_BY_ID))
    if unknown:
        raise AssignmentError(f"unknown task(s) {', '.join(unknown)}; the tasks are: {', '.join(TASKS_BY_ID)}")
    if not chosen:
        raise AssignmentError("no task matches the given --assignment/--task")
    return chosen
