"""tinydgl's functional API: every op as a pair of plain functions (CS231n style).

    out, cache = F.conv2d_forward(x, w, b, stride=1, padding=1)
    dx, dw, db = F.conv2d_backward(dout, cache)

`*_forward` returns `(out, cache)`; `*_backward(dout, cache)` returns the gradients of the differentiable
inputs, in order. Losses return `(loss, dlogits)`. All ops take their array library from their inputs, so
they run unchanged on NumPy, CuPy or any array-API library (see `tinydgl.backend`).
"""
from .ops.activation import (leaky_relu_backward, leaky_relu_forward, relu_backward, relu_forward, tanh_backward,
                             tanh_forward)
from .ops.conv import col2im, conv2d_backward, conv2d_forward, conv_output_size, im2col
from .ops.dropout import dropout_backward, dropout_forward
from .ops.linear import linear_backward, linear_forward
from .ops.losses import (binary_cross_entropy_with_logits, log_softmax, mse_loss, one_hot, sigmoid_binary_cross_entropy,
                         softmax, softmax_cross_entropy)
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
    l2_normalize_backward,
    l2_normalize_forward,
    length_normalize_backward,
    length_normalize_forward,
)
from .ops.pool import (
    adaptive_avgpool2d_backward,
    adaptive_avgpool2d_forward,
    adaptive_windows,
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from .ops.shape import flatten_backward, flatten_forward
from .ops.similarity import similarity_matching_loss, similarity_matrix_backward, similarity_matrix_forward

__all__ = [name for name in dir() if not name.startswith("_")]
