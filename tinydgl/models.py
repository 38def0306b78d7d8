"""Model builders. Every model is a `Sequential` of *blocks* (each itself a `Sequential`), so a trainer can
cut it into modules at block boundaries: backprop chains all blocks, DGL/LLS give each its own loss.

    model = build_model("smallconv", in_channels=1, image_size=28, num_classes=10, seed=0)
    model.layers      # the blocks; model.layers[-1] is the classifier head

A block's `local_pool` is the size LLS pools its output to (from the official LLS code).
"""

from .backend import default_rng
from .nn import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Tanh,
)


def _pooled(size, k, stride=None):
    return (size - k) // (stride or k) + 1


ACTIVATIONS = {"relu": ReLU, "tanh": Tanh}


def mlp(
    in_channels=1,
    image_size=28,
    num_classes=10,
    hidden=(256, 256),
    batchnorm=True,
    activation="relu",
    seed=0,
    dtype="float32",
    bias=True,
    output_batchnorm=False,
):
    """Fully connected net: [flatten,] Linear -> BatchNorm1d -> ReLU per hidden layer, then a linear head.

    The DNI paper's MNIST nets use 256-unit hidden layers like these. activation: "relu" or "tanh" (the DRTP
    reference code's, with batchnorm=False and hidden=(1000,) or more). bias=False and output_batchnorm=True
    give koz4k's dni-pytorch examples/mnist-mlp net: Linear layers without biases, batch norm on the logits too.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}.")
    if any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden layer widths must be positive, got {list(hidden)}.")
    rng = default_rng(seed)
    blocks, width = [], in_channels * image_size * image_size
    for i, h in enumerate(hidden):
        layers = [Flatten()] if i == 0 else []
        layers.append(Linear(width, h, bias=bias, rng=rng, dtype=dtype))
        if batchnorm:
            layers.append(BatchNorm1d(h, dtype=dtype))
        layers.append(ACTIVATIONS[activation]())
        blocks.append(Sequential(*layers))
        width = h
    head = [Flatten()] if not hidden else []
    head.append(Linear(width, num_classes, bias=bias, rng=rng, dtype=dtype))
    if output_batchnorm:
        head.append(BatchNorm1d(num_classes, dtype=dtype))
    blocks.append(Sequential(*head))
    return Sequential(*blocks)


def cnn(in_channels=1, image_size=28, num_classes=10, seed=0, dtype="float32"):
    """Small MNIST CNN: (conv3x3 same-padding -> ReLU -> maxpool2) x 2 with 32 and 64 filters, then linear."""
    rng = default_rng(seed)
    side = _pooled(_pooled(image_size, 2), 2)
    return Sequential(
        Sequential(Conv2d(in_channels, 32, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2)),
        Sequential(Conv2d(32, 64, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2)),
        Sequential(Flatten(), Linear(64 * side * side, num_classes, rng=rng, dtype=dtype)),
    )


def _conv_block(cin, cout, rng, dtype, local_pool, pool_first=False, stride=1):
    """LLS's ConvBlock: conv3x3 (pad 1) -> BatchNorm2d -> LeakyReLU(0.01), optionally after a 2x2 max-pool."""
    layers = [MaxPool2d(2)] if pool_first else []
    layers += [
        Conv2d(cin, cout, 3, stride=stride, padding=1, rng=rng, dtype=dtype),
        BatchNorm2d(cout, dtype=dtype),
        LeakyReLU(0.01),
    ]
    return Sequential(*layers, local_pool=local_pool)


def _linear_head(features, hidden, num_classes, rng, dtype):
    """Adaptive-average-pool to 2x2, flatten, a linear block (Linear -> BN1d -> LeakyReLU), then the classifier."""
    return [
        Sequential(
            AdaptiveAvgPool2d(2),
            Flatten(),
            Linear(features * 4, hidden, rng=rng, dtype=dtype),
            BatchNorm1d(hidden, dtype=dtype),
            LeakyReLU(0.01),
        ),
        Sequential(Linear(hidden, num_classes, rng=rng, dtype=dtype)),
    ]


def _smallconv(widths, hidden, in_channels, num_classes, seed, dtype):
    rng = default_rng(seed)
    c1, c2, c3 = widths
    return Sequential(
        _conv_block(in_channels, c1, rng, dtype, local_pool=4),
        _conv_block(c1, c2, rng, dtype, local_pool=2, pool_first=True),
        _conv_block(c2, c3, rng, dtype, local_pool=2, pool_first=True),
        *_linear_head(c3, hidden, num_classes, rng, dtype),
    )


def smallconv(in_channels=1, image_size=28, num_classes=10, seed=0, dtype="float32"):
    """LLS's SmallConv: 32/64/128-channel conv blocks with max-pools between, a 512 linear block, a head.

    362,506 parameters for 3 input channels and 10 classes (as in the official code). Works for any image
    size >= 4, thanks to the adaptive pool.
    """
    return _smallconv((32, 64, 128), 512, in_channels, num_classes, seed, dtype)


def smallconvl(in_channels=1, image_size=28, num_classes=10, seed=0, dtype="float32"):
    """SmallConvL: SmallConv with 96/192/512 channels and a 2048 -> 1024 linear block."""
    return _smallconv((96, 192, 512), 1024, in_channels, num_classes, seed, dtype)


def vgg8(in_channels=3, image_size=32, num_classes=10, seed=0, dtype="float32"):
    """LLS's VGG8: conv blocks 128, 256, pool, 256, 256, pool, 512, pool, 512, then the 2048 -> 1024 head.

    7.13 M parameters for 10 classes.
    """
    rng = default_rng(seed)
    return _official_local_width(
        Sequential(
            _conv_block(in_channels, 128, rng, dtype, local_pool=4),
            _conv_block(128, 256, rng, dtype, local_pool=2),
            _conv_block(256, 256, rng, dtype, local_pool=2, pool_first=True),
            _conv_block(256, 256, rng, dtype, local_pool=2),
            _conv_block(256, 512, rng, dtype, local_pool=2, pool_first=True),
            _conv_block(512, 512, rng, dtype, local_pool=2, pool_first=True),
            *_linear_head(512, 1024, num_classes, rng, dtype),
        )
    )


def _official_local_width(model, width=2048):
    """The official LLS code's VGG and MobileNet draw every block's random (or trainable, LocalLosses) local
    matrix 2048 columns wide and average-pool it to the block's size; SmallConv draws it at that size."""
    for block in model.layers[:-1]:
        block.local_width = width
    return model


MOBILENET_WIDTHS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
MOBILENET_LOCAL_POOLS = [4, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1]


def mobilenet_v1(in_channels=3, image_size=32, num_classes=10, seed=0, dtype="float32"):
    """MobileNet-V1: conv3x3 stride 2 -> 32, then 13 depthwise-separable blocks, global average pool, linear.

    A depthwise-separable block is a depthwise 3x3 conv (groups = channels) -> BN -> LeakyReLU, then a
    pointwise 1x1 conv -> BN -> LeakyReLU. Deliberate difference: the official LLS code pads its depthwise
    convs by `stride` (2 for the strided ones); we use the standard padding 1.
    """
    rng = default_rng(seed)
    blocks = [_conv_block(in_channels, 32, rng, dtype, local_pool=8, stride=2)]
    cin = 32
    for (cout, stride), pool in zip(MOBILENET_WIDTHS, MOBILENET_LOCAL_POOLS):
        blocks.append(
            Sequential(
                Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False, rng=rng, dtype=dtype),
                BatchNorm2d(cin, dtype=dtype),
                LeakyReLU(0.01),
                Conv2d(cin, cout, 1, bias=False, rng=rng, dtype=dtype),
                BatchNorm2d(cout, dtype=dtype),
                LeakyReLU(0.01),
                local_pool=pool,
            )
        )
        cin = cout
    blocks.append(Sequential(AdaptiveAvgPool2d(1), Flatten(), Linear(cin, num_classes, rng=rng, dtype=dtype)))
    return _official_local_width(Sequential(*blocks))


def dni_cnn(in_channels=3, image_size=32, num_classes=10, seed=0, dtype="float32"):
    """The DNI paper's CIFAR-10 CNN: three conv5x5 (128 filters, same padding) -> BN -> ReLU layers, with a
    3x3 max-pool after the first and 3x3 average pools after the others, then a linear classifier."""
    rng = default_rng(seed)
    side = _pooled(_pooled(_pooled(image_size, 3), 3), 3)
    if side < 1:
        raise ValueError(f"dni_cnn needs images of at least 27x27 pixels, got {image_size}.")

    def block(cin, pool):
        return Sequential(
            Conv2d(cin, 128, 5, padding=2, rng=rng, dtype=dtype), BatchNorm2d(128, dtype=dtype), ReLU(), pool
        )

    return Sequential(
        block(in_channels, MaxPool2d(3)),
        block(128, AvgPool2d(3)),
        block(128, AvgPool2d(3)),
        Sequential(Flatten(), Linear(128 * side * side, num_classes, rng=rng, dtype=dtype)),
    )


MODELS = {
    "mlp": mlp,
    "cnn": cnn,
    "smallconv": smallconv,
    "smallconvl": smallconvl,
    "vgg8": vgg8,
    "mobilenet_v1": mobilenet_v1,
    "dni_cnn": dni_cnn,
}


def build_model(name, in_channels=1, image_size=28, num_classes=10, seed=0, dtype="float32", **kwargs):
    """Build model `name` (one of MODELS) for images of in_channels x image_size x image_size."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    model = MODELS[name](
        in_channels=in_channels, image_size=image_size, num_classes=num_classes, seed=seed, dtype=dtype, **kwargs
    )
    # Trainers that attach heads to blocks (DGL, LLS, DNI) read the input shape to size them.
    model.input_shape = (in_channels, image_size, image_size)
    model.num_classes = num_classes
    return model
