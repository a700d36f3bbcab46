"""Student architectures, built by factories that a configuration names.

``paper_cnn`` follows the description of the students in arXiv 2603.06698: three convolution
blocks of widths 16, 32 and 64 times a width multiplier (1, 2 or 4), then a two-layer head into
the teacher's embedding space. What the paper leaves open is fixed here: 3 x 3 convolutions with
batch norm and ReLU, 2 x 2 max pooling after each block, global average pooling, a hidden width
of 256.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PaperCNN", "paper_cnn"]


class PaperCNN(nn.Module):
    """Three conv blocks (16, 32, 64) x ``width`` and a two-layer projection head.

    Layers for extraction: ``blocks.0`` .. ``blocks.2`` (maps), ``pool`` (pooled features),
    ``embedding`` (the head's output).
    """

    def __init__(self, width: int = 1, embed_dim: int = 512, hidden: int = 256, in_chans: int = 3):
        super().__init__()
        chans = [in_chans] + [c * width for c in (16, 32, 64)]
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b),
                          nn.ReLU(inplace=True), nn.MaxPool2d(2))
            for a, b in zip(chans[:-1], chans[1:])
        ])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(chans[-1], hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(x)))


def paper_cnn(width: int = 1, embed_dim: int = 512, hidden: int = 256) -> PaperCNN:
    """The arXiv 2603.06698 student at width multiplier ``width`` (1 = S, 2 = M, 4 = L)."""
    return PaperCNN(width=width, embed_dim=embed_dim, hidden=hidden)
