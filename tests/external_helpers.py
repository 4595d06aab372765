"""A model file and random weights for the tests of models robustgsl did not train."""

from __future__ import annotations

import textwrap

import torch
from torch import nn

MODEL_FILE = textwrap.dedent('''
    import torch
    import torchvision
    from torch import nn

    def resnet18_cifar():
        return torchvision.models.resnet18(num_classes=10)

    class TinyNet(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, num_classes)

        def features(self, x):
            return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))

        def forward(self, x):
            return self.fc(self.features(x))

    def tiny_100():
        return TinyNet(num_classes=100)

    def tiny_3():
        return TinyNet(num_classes=3)

    NOT_CALLABLE = 3

    def not_a_module():
        return "a string"
''')


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics, so a load that silently failed would show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.2 + 0.9
                             if tensor.ndim <= 1 else torch.randn(tensor.shape, generator=generator) * 0.05)
    return model.eval()
