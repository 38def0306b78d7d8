"""Hidden tests: the instructor's extra checks of some tasks, kept by the autograder, left out of the student copy.

`tinydgl assignments build` does not copy this file, so students never see these tests, but `grade` and the
Gradescope autograder run them with the visible ones (their course is built with hidden tests kept): a task
earns its points only when both pass. They catch what a solution can get wrong while passing every visible
test. A student copy's handout says how many hidden tests each task has, not what they check. (GitHub
Classroom grades from the template repository, which students can read, so it runs the visible tests only.)
"""
import numpy as np

from tinydgl import functional as F
from test_assignments_tasks import task


@task("a1-relu-backward")
def test_relu_backward_leaves_dout_unchanged():
    """`dx = dout; dx *= mask` passes every visible test but overwrites the caller's gradient."""
    rng = np.random.default_rng(11)
    x, dout = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    before = dout.copy()
    _, cache = F.relu_forward(x)
    dx = F.relu_backward(dout, cache)
    np.testing.assert_array_equal(dout, before, err_msg="relu_backward changed its dout argument")
    np.testing.assert_array_equal(dx, np.where(x > 0, before, 0.0))


@task("a1-softmax-ce")
def test_softmax_cross_entropy_is_finite_for_huge_logits():
    """A softmax that does not subtract the row maximum overflows: exp(1000) is inf."""
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 2000.0, 1.0]])
    loss, dlogits = F.softmax_cross_entropy(logits, np.array([0, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert abs(float(loss)) < 1e-6
