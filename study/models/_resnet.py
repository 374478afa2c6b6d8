"""The layout both ResNet families share (`resnet1d.py`, `resnet_v2.py`): stem and stages.

Stem: conv k7 s2 -> batch norm -> ReLU -> max pool 3 s2, at `base_width` filters. Stages:
one per entry of `layers`, stage i with `base_width * 2**i` planes, stride 2 on the first
block of every stage but the first. The families differ only in what is passed in: the conv
and pool types (Keras 'same' padding or not), the block (and its kernel size per stage), and
their head and initialisation, which they build themselves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import nn

__all__ = ["resnet_trunk"]

#: (in_planes, planes, stride, stage index) -> one residual block.
MakeBlock = Callable[[int, int, int, int], nn.Module]
#: (in_channels, out_channels, kernel_size, stride) -> a bias-free conv.
MakeConv = Callable[[int, int, int, int], nn.Module]


def resnet_trunk(
    make_block: MakeBlock,
    expansion: int,
    layers: tuple[int, ...],
    *,
    in_channels: int,
    base_width: int,
    conv: MakeConv,
    pool: nn.Module,
) -> tuple[nn.Sequential, nn.Sequential, int]:
    """Build a ResNet's stem and stages, in forward order.

    Modules are created in forward order (stem conv, then block by block) so a seeded
    build draws the same default initialisation as it always has.

    Args:
        make_block: builds one block; the stage index lets a family pick its kernel size.
        expansion: output planes of a block per planes (1 basic, 4 bottleneck).
        layers: blocks per stage.
        in_channels: leads of the input.
        base_width: filters of the stem and first stage.
        conv: builds the stem conv.
        pool: the stem's max pool.

    Returns:
        (stem, stages, features): features is the channel count of the last stage's output.
    """
    stem = nn.Sequential(
        OrderedDict(
            conv=conv(in_channels, base_width, 7, 2),
            bn=nn.BatchNorm1d(base_width),
            act=nn.ReLU(inplace=True),
            pool=pool,
        )
    )
    stages = []
    in_planes = base_width
    for i, n_blocks in enumerate(layers):
        planes = base_width * 2**i
        blocks = [make_block(in_planes, planes, 1 if i == 0 else 2, i)]
        in_planes = planes * expansion
        blocks += [make_block(in_planes, planes, 1, i) for _ in range(n_blocks - 1)]
        stages.append(nn.Sequential(*blocks))
    return stem, nn.Sequential(*stages), in_planes
