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
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for label, history in histories.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label=label)
        ax_acc.plot(epochs, [h["test_accuracy"] for h in history], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
