"""PreActResNet-18 in the kuangliu/pytorch-cifar layout, with its input normalisation inside.

Layout (He et al., 2016, "Identity Mappings in Deep Residual Networks", as in kuangliu/pytorch-cifar's
models/preact_resnet.py): 3x3 stem conv 3->64, four stages of two pre-activation blocks at widths
64/128/256/512 (stride 2 from stage 2), 1x1 conv shortcuts without BatchNorm where the shape changes,
4x4 average pooling, linear head. 11,166,016 backbone parameters at width 1.

Inputs are images in [0, 1]; the per-channel mean/std live in buffers so a saved checkpoint takes raw
images like RobustBench models do. For the graph smoothness loss the head's d outputs are L2-normalised
(or passed through BatchNorm1d, as the paper does for d = 2). ``final_bn_relu=True`` adds the BatchNorm-ReLU
that He et al.'s pre-activation network applies before pooling and kuangliu's omits (off by default).
A CE model may put a narrow linear ``bottleneck`` between the features and its classifier (the paper's 2-D CE embedding of Figure 1); without
one the network, its parameters and their initialisation are exactly the layout above.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustgsl.errors import InputError
from robustgsl.vocabulary import NORMALIZATIONS

# GSL output normalisations: "l2" (the paper's unit-norm outputs), "batchnorm" (BatchNorm1d, the paper's
# choice for d = 2) and "bn-l2" (BatchNorm1d without affine parameters, then unit norm: the outputs are
# centred and scaled per batch before they are projected onto the sphere; benchmarks/README.md shows why).


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection shortcut sees the pre-activated input, as in the reference implementation.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreActResNet-18 returning the head's outputs; ``features`` gives the 512*width penultimate vector.

    Args:
        out_dim: number of outputs (classes for CE; the embedding dimension d for GSL).
        normalization: ``None`` (CE logits), ``"l2"`` (GSL: unit-norm outputs), ``"batchnorm"`` or ``"bn-l2"``
            (see NORMALIZATIONS).
        width: channel multiplier; 1 is the paper's network, smaller values give narrow CPU variants.
        mean, std: per-channel input normalisation, stored as buffers.
        final_bn_relu: BatchNorm2d + ReLU on the last stage's output before pooling (He et al., 2016).
        bottleneck: ``None``, or the width of a linear layer between the features and ``linear`` (features ->
            Linear(feature_dim, bottleneck) -> Linear(bottleneck, out_dim)); its output is then the embedding.
    """

    def __init__(
        self,
        out_dim: int = 10,
        normalization: str | None = None,
        width: float = 1.0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
        final_bn_relu: bool = False,
        bottleneck: int | None = None,
    ):
        super().__init__()
        if normalization not in (None, *NORMALIZATIONS):
            raise InputError(f"normalization must be one of {NORMALIZATIONS} or None, got {normalization!r}")
        if not width > 0:
            raise InputError(f"width must be > 0, got {width!r}")
        if int(out_dim) != out_dim or out_dim < 1:
            raise InputError(f"out_dim must be a positive integer, got {out_dim!r}")
        if bottleneck is not None and (int(bottleneck) != bottleneck or bottleneck < 1):
            raise InputError(f"bottleneck must be a positive integer or None, got {bottleneck!r}")
        widths = [max(1, round(base * width)) for base in (64, 128, 256, 512)]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        stages, in_planes = [], widths[0]
        for index, planes in enumerate(widths):
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = widths[-1]
        self.final_norm = nn.BatchNorm2d(self.feature_dim) if final_bn_relu else None
        # Created only when asked for, so a model without one has the same parameters, drawn in the same order.
        self.bottleneck = nn.Linear(self.feature_dim, int(bottleneck)) if bottleneck is not None else None
        self.linear = nn.Linear(self.feature_dim if bottleneck is None else int(bottleneck), int(out_dim))
        self.normalization = normalization
        self.output_norm = None
        if normalization in ("batchnorm", "bn-l2"):
            self.output_norm = nn.BatchNorm1d(int(out_dim), affine=normalization == "batchnorm")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (after average pooling), shape (B, 512 * width)."""
        x = (x - self.mean) / self.std
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.final_norm is not None:
            out = F.relu(self.final_norm(out))
        # kuangliu's network pools with a fixed 4x4 window, which is global pooling at 32x32 input.
        out = F.avg_pool2d(out, 4)
        return out.flatten(1)

    def _head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, embedding): the embedding is the normalised outputs (GSL), the bottleneck's output, or
        the features."""
        embedding = features if self.bottleneck is None else self.bottleneck(features)
        out = self.linear(embedding)
        if self.output_norm is not None:
            out = self.output_norm(out)
        if self.normalization in ("l2", "bn-l2"):
            out = F.normalize(out.float(), dim=1)
        return out, (embedding if self.normalization is None else out)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self._head(features)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, embedding) from one pass; the embedding is what the k-NN and SVC heads use: the d
        outputs for GSL, the penultimate features (or the bottleneck's output) for CE.

        The head runs in float32 even under autocast: bf16 logits can tie two close classes and change
        an argmax.
        """
        features = self.features(x)
        with torch.autocast(x.device.type, enabled=False):
            return self._head(features.float())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding the k-NN and SVC heads use (see ``forward_with_embedding``)."""
        return self.forward_with_embedding(x)[1]


def backbone_parameter_count(model: PreActResNet18) -> int:
    head = {id(p) for p in model.linear.parameters()}
    if model.bottleneck is not None:
        head |= {id(p) for p in model.bottleneck.parameters()}
    if model.output_norm is not None:
        head |= {id(p) for p in model.output_norm.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in head)
