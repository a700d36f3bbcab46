"""Model factories that extraction tests name in their configurations."""

import torch
from torch import nn


class Identity(nn.Module):
    """Returns its input flattened: the stored embedding is exactly the model input."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # one parameter, so the model has weights

    def forward(self, x):
        return (x * self.scale).flatten(1)


def identity():
    return Identity()


def tiny_cnn(width: int = 4):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(4 * width, 6))


def not_a_module():
    return 42
