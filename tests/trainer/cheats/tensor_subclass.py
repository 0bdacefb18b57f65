"""Cheat: the model returns a torch.Tensor subclass that could override the harness's arithmetic."""
import sys

import torch

from trainer import train as genesis


class Logits(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        # a real cheat would rewrite log_softmax / gather / sum here
        return super().__torch_function__(func, types, args, kwargs or {})


def build_model(config):
    model = genesis.build_model(config)
    forward = model.forward
    model.forward = lambda idx, targets=None: forward(idx, targets).as_subclass(Logits)
    return model


if __name__ == "__main__":
    sys.exit(genesis.main())
