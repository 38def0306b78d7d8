"""Helpers that several test files share (not tests themselves; pytest puts this folder on sys.path)."""

import numpy as np


class RecordGradients:
    """An optimizer that only keeps a copy of the gradients it is handed (the weights do not move): what a
    trainer hands its optimizer, for checking a method's signal against a reference."""

    def __init__(self, params):
        self.params, self.grads = params, None

    def step(self):
        self.grads = [np.array(p.grad, copy=True) for p in self.params]

    def zero_grad(self):
        pass

    def train(self):
        pass

    def eval(self):
        pass


def assert_same_trainer_state(a, b):
    """Two trainers hold bit-identical weights, auxiliary modules and optimizer states (steps, rates,
    schedule-free scalars, buffers)."""
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa["model"]:
        np.testing.assert_array_equal(sa["model"][key], sb["model"][key], err_msg=key)
    for name in sa["aux"]:
        for key in sa["aux"][name]:
            np.testing.assert_array_equal(sa["aux"][name][key], sb["aux"][name][key], err_msg=f"{name}/{key}")
    for oa, ob in zip(sa["optimizers"], sb["optimizers"]):
        assert oa["steps"] == ob["steps"] and oa["lr"] == ob["lr"] and oa["scalars"] == ob["scalars"]
        for key in oa["buffers"]:
            np.testing.assert_array_equal(oa["buffers"][key], ob["buffers"][key], err_msg=key)
