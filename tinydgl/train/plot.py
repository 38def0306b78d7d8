"""Learning-curve plots (matplotlib is the optional extra `plot`: see tinydgl.extras)."""


def plot_history(histories, path, title=None):
    """Write a PNG with train loss and test accuracy per epoch; `histories` maps a label to a history list."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        from ..extras import install_command

        raise ImportError(f"--plot needs matplotlib: {install_command('plot')}") from err
    fig = learning_curves(histories, title, plt.figure(figsize=(10, 4)))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def learning_curves(histories, title=None, fig=None):
    """Draw the curves into `fig` (a new matplotlib Figure if None) and return it: the training loss on the
    left, the test accuracy per epoch on the right, with whole-number epoch ticks. A one-epoch run has one
    test point, so its loss is drawn per step instead, from the history's `loss_curve` (runs that did not
    record one, e.g. the parallel engines, keep their single point)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = fig if fig is not None else Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    per_step = all(len(h) == 1 and h[0].get("loss_curve") for h in histories.values())
    every = max((h[0].get("loss_curve_every", 1) for h in histories.values()), default=1) if per_step else None
    for label, history in histories.items():
        epochs = [h["epoch"] for h in history]
        if per_step:
            steps = history[0].get("loss_curve_every", 1)  # each point: the mean loss of this many steps
            ax_loss.plot(
                [steps * (i + 1) for i in range(len(history[0]["loss_curve"]))], history[0]["loss_curve"], label=label
            )
        else:
            ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label=label)
        ax_acc.plot(epochs, [h["test_accuracy"] for h in history], marker="o", label=label)
    ax_loss.set(
        xlabel="step (epoch 1)" if per_step else "epoch",
        ylabel="train loss",
        title="training loss"
        + ("" if not per_step else " per step" if every == 1 else f", mean of every {every} steps"),
    )
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    if per_step:
        ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    last = max((h[-1]["epoch"] for h in histories.values() if h), default=1)
    for ax in (ax_acc,) if per_step else (ax_loss, ax_acc):
        if last == 1:  # one point: matplotlib would widen the axis to 0.96 ... 1.04, ticked in hundredths
            ax.set_xlim(0.5, 1.5)
            ax.set_xticks([1])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
