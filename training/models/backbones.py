"""Image backbones: ``image [N, C, S, S] float32 -> features [N, D]`` (global-average pooled).

Every backbone module has ``feature_dim`` (D) and ``in_channels`` (C) attributes.

* ``compact_cnn``: a VGG-style net for small grey faces (FER2013 is 48x48): four stages of
  ``n_convs`` 3x3 conv-BN-ReLU + 2x2 max-pool, widths ``widths`` (default 32-64-128-256 with 2-2-3-3 convs,
  ~2M parameters), global average pooling. Cheap enough to train on a CPU.
* ``resnet18``, ``resnet50``, ``mobilenet_v3_small``, ``densenet121``: torchvision
  architectures built with ``weights=None`` (nothing is downloaded), for users with a GPU.
  Grey input either replaces the first convolution by a 1-channel one
  (``grey_input="adapt"``, default) or repeats the channel three times (``"repeat"``).
  Needs the optional ``torchvision`` package.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ros2_affect.errors import ConfigError, did_you_mean


class CompactCNN(nn.Module):
    """VGG-style backbone; see the module docstring."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256),
        n_convs: Union[int, Sequence[int]] = (2, 2, 3, 3),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) < 1 or any(int(w) < 1 for w in widths):
            raise ConfigError(f"compact_cnn widths must be >= 1 per stage, got {list(widths)}")
        convs = [int(n_convs)] * len(widths) if isinstance(n_convs, int) else [int(n) for n in n_convs]
        if len(convs) != len(widths) or min(convs) < 1:
            raise ConfigError(f"compact_cnn n_convs must be >= 1, one per stage of {list(widths)}, got {n_convs}")
        layers: list = []
        ci = in_channels
        for w, nc in zip(widths, convs, strict=True):
            for _ in range(nc):
                conv = nn.Conv2d(ci, int(w), 3, padding=1, bias=False)
                layers += [conv, nn.BatchNorm2d(int(w)), nn.ReLU(inplace=True)]
                ci = int(w)
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: tiny inputs never shrink to 0
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.in_channels = in_channels
        self.feature_dim = ci

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` (N, C, S, S) float32 -> (N, D) float32 features."""
        return self.dropout(torch.flatten(self.pool(self.features(image)), 1))


class _TorchvisionBackbone(nn.Module):
    def __init__(self, net: nn.Module, feature_dim: int, in_channels: int, repeat: int) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = feature_dim
        self.in_channels = in_channels
        self._repeat = repeat

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self._repeat > 1:
            image = image.repeat(1, self._repeat, 1, 1)
        return torch.flatten(self.net(image), 1)


def _torchvision(arch: str, in_channels: int, grey_input: str) -> nn.Module:
    try:
        import torchvision.models as tvm
    except ImportError as exc:
        raise ConfigError(
            f"backbone {arch!r} needs torchvision, which is not installed; install the torchvision release "
            f"that matches your torch ({torch.__version__}) or use backbone 'compact_cnn'"
        ) from exc
    if grey_input not in ("adapt", "repeat"):
        raise ConfigError(f"grey_input must be 'adapt' or 'repeat', got {grey_input!r}")
    net = getattr(tvm, arch)(weights=None)
    adapt = in_channels != 3 and grey_input == "adapt"
    repeat = 3 // in_channels if (in_channels != 3 and not adapt) else 1
    if arch.startswith("resnet"):
        dim = net.fc.in_features
        net.fc = nn.Identity()
        if adapt:
            old = net.conv1
            net.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    elif arch.startswith("mobilenet"):
        dim = net.classifier[0].in_features
        net.classifier = nn.Identity()
        if adapt:
            old = net.features[0][0]
            net.features[0][0] = nn.Conv2d(
                in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
            )
    elif arch.startswith("densenet"):
        dim = net.classifier.in_features
        net.classifier = nn.Identity()
        if adapt:
            old = net.features.conv0
            net.features.conv0 = nn.Conv2d(
                in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
            )
    else:  # pragma: no cover - guarded by BACKBONES
        raise ConfigError(f"unsupported torchvision backbone {arch!r}")
    return _TorchvisionBackbone(net, dim, in_channels, repeat)


def _compact(in_channels: int = 1, **kwargs: object) -> nn.Module:
    return CompactCNN(in_channels=in_channels, **kwargs)  # type: ignore[arg-type]


def _tv(arch: str) -> Callable[..., nn.Module]:
    def make(in_channels: int = 1, grey_input: str = "adapt") -> nn.Module:
        return _torchvision(arch, in_channels, grey_input)

    return make


#: backbone name -> factory(in_channels=..., **kwargs) -> module with .feature_dim
BACKBONES: Dict[str, Callable[..., nn.Module]] = {
    "compact_cnn": _compact,
    "resnet18": _tv("resnet18"),
    "resnet50": _tv("resnet50"),
    "mobilenet_v3_small": _tv("mobilenet_v3_small"),
    "densenet121": _tv("densenet121"),
}


def create_backbone(name: str, in_channels: int = 1, kwargs: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """The backbone registered as ``name``, built for ``in_channels`` input channels.

    Raises:
        ConfigError: ``name`` is not registered (the message lists the names and the closest one).
    """
    if name not in BACKBONES:
        raise ConfigError(
            f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}{did_you_mean(name, BACKBONES)}"
        )
    return BACKBONES[name](in_channels=in_channels, **dict(kwargs or {}))

