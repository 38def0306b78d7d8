"""tinydgl's functional API: every op as a pair of plain functions (CS231n style).

    out, cache = F.conv2d_forward(x, w, b, stride=1, padding=1)
    dx, dw, db = F.conv2d_backward(dout, cache)

`*_forward` returns `(out, cache)`; `*_backward(dout, cache)` returns the gradients of the differentiable
inputs, in order; `*_jvp(cache, dx, ...)` (forward mode) returns the output's tangent for tangents of the
inputs and parameters. Losses return `(loss, dlogits)`. All ops take their array library from their inputs, so
they run unchanged on NumPy, CuPy or any array-API library (see `tinydgl.backend`).
"""

from .ops.activation import (
    leaky_relu_backward,
    leaky_relu_forward,
    leaky_relu_jvp,
    relu_backward,
    relu_forward,
    relu_jvp,
    tanh_backward,
    tanh_forward,
    tanh_jvp,
)
from .ops.conv import col2im, conv2d_backward, conv2d_forward, conv2d_input, conv2d_jvp, conv_output_size, im2col
from .ops.dropout import dropout_backward, dropout_forward, dropout_jvp
from .ops.linear import linear_backward, linear_forward, linear_jvp
from .ops.losses import (
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_jvp,
    float64_scalar,
    log_softmax,
    log_softmax_jvp,
    mse_loss,
    mse_loss_jvp,
    one_hot,
    sigmoid_binary_cross_entropy,
    sigmoid_binary_cross_entropy_jvp,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_jvp,
    softmax_cross_entropy_row_jvp,
    softmax_jvp,
)
from .ops.naive import (
    adaptive_avgpool2d_forward_naive,
    avgpool2d_backward_naive,
    avgpool2d_forward_naive,
    conv2d_backward_naive,
    conv2d_forward_naive,
    maxpool2d_backward_naive,
    maxpool2d_forward_naive,
)
from .ops.norm import (
    batchnorm_backward,
    batchnorm_forward,
    batchnorm_jvp,
    l2_normalize_backward,
    l2_normalize_forward,
    l2_normalize_jvp,
    length_normalize_backward,
    length_normalize_forward,
    length_normalize_jvp,
)
from .ops.pool import (
    adaptive_avgpool2d_backward,
    adaptive_avgpool2d_forward,
    adaptive_avgpool2d_jvp,
    adaptive_windows,
    avgpool2d_backward,
    avgpool2d_forward,
    avgpool2d_jvp,
    maxpool2d_backward,
    maxpool2d_forward,
    maxpool2d_jvp,
)
from .ops.shape import flatten_backward, flatten_forward, flatten_jvp
from .ops.similarity import (
    similarity_matching_loss,
    similarity_matrix_backward,
    similarity_matrix_forward,
    similarity_matrix_jvp,
)

__all__ = [name for name in dir() if not name.startswith("_")]
