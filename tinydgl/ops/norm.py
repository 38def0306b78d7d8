"""Batch normalisation over the batch (and spatial) axes, for (N, C) and (N, C, H, W) inputs."""
from ..backend import array_namespace


def _axes_and_shape(x):
    if x.ndim == 2:
        return (0,), (1, x.shape[1])
    if x.ndim == 4:
        return (0, 2, 3), (1, x.shape[1], 1, 1)
    raise ValueError(f"batchnorm expects (N, C) or (N, C, H, W) input, got shape {tuple(x.shape)}.")


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """Normalise each channel to zero mean and unit variance, then scale by gamma and shift by beta.

    x: (N, C) or (N, C, H, W); gamma, beta, running_mean, running_var: (C,).
    Training mode uses the batch statistics and updates running_mean / running_var *in place*
    (new = (1 - momentum) * old + momentum * batch; the running variance uses the unbiased batch variance,
    as PyTorch does). Evaluation mode uses the running statistics. Returns out (x's shape) and a cache.
    """
    xp = array_namespace(x)
    axes, shape = _axes_and_shape(x)
    count = x.size // x.shape[1]
    if training:
        if count < 2:
            raise ValueError("batchnorm in training mode needs more than one value per channel (batch size >= 2).")
        mean = xp.mean(x, axis=axes)
        centered = x - xp.reshape(mean, shape)
        var = xp.mean(centered * centered, axis=axes)
        if running_mean is not None:
            running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
            running_var[...] = (1.0 - momentum) * running_var + momentum * var * (count / (count - 1))
    else:
        if running_mean is None:
            raise ValueError("batchnorm in evaluation mode needs running_mean and running_var.")
        mean, var = running_mean, running_var
        centered = x - xp.reshape(mean, shape)
    inv_std = 1.0 / xp.sqrt(var + eps)
    x_hat = centered * xp.reshape(inv_std, shape)
    out = x_hat * xp.reshape(gamma, shape) + xp.reshape(beta, shape)
    return out, (x_hat, gamma, inv_std, training, axes, shape, count)


def batchnorm_backward(dout, cache):
    """dout: x's shape -> dx (x's shape), dgamma (C,), dbeta (C,).

    In training mode the batch mean and variance depend on every input, which gives the compact form
    dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout * x_hat)).
    """
    x_hat, gamma, inv_std, training, axes, shape, count = cache
    xp = array_namespace(dout)
    dbeta = xp.sum(dout, axis=axes)
    dgamma = xp.sum(dout * x_hat, axis=axes)
    scale = xp.reshape(gamma * inv_std, shape)
    if training:
        dx = scale * (dout - xp.reshape(dbeta / count, shape) - x_hat * xp.reshape(dgamma / count, shape))
    else:
        dx = scale * dout
    return dx, dgamma, dbeta
