"""Convolutional encoder and decoder of the LOMPO world model (docs/algorithms.md, world model).

Encoder: conv 3->d->2d->4d->8d, kernel 4, stride 2, ReLU, flatten (d = 32 in LOMPO; 1024
features at 64 px). Decoder: Linear(feat -> 32d) -> transposed convs 4d, 2d, d, 3 with kernels
5, 5, 6, 6, stride 2 from a 1x1 map (64 px). Other sizes: 32 px drops one layer, 128 px adds one.
Images enter as uint8 [..., H, W, 3] and are scaled to [-0.5, 0.5] as in Dreamer/LOMPO.
"""

from __future__ import annotations

import torch
from torch import nn

# image side -> kernels of the transposed convs (each stride 2, from a 1x1 map)
DECODER_KERNELS = {32: (5, 6, 6), 64: (5, 5, 6, 6), 128: (5, 5, 6, 6, 2)}
ENCODER_LAYERS = {32: 3, 64: 4, 128: 5}


def take_rows(p: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """p[index] along dim 0, with a backward pass that is the same run to run on several CPU
    threads. `p[index]`'s backward (index_put_ with accumulate) sums the rows of repeated
    indices in a thread-dependent order, so a world model trained on 2 threads ended elsewhere
    on identical logs (the demo: image NLL 27.53 vs 27.62 after 1,000 steps); index_select's
    backward (index_add_) adds them in index order."""
    return torch.index_select(p, 0, index)


def check_image_size(size: int) -> None:
    if size not in DECODER_KERNELS:
        raise ValueError(f"model image size {size} not supported; expected one of "
                         f"{sorted(DECODER_KERNELS)}")


def image_to_float(image_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-0.5, 0.5]."""
    return image_u8.movedim(-1, -3).float() / 255.0 - 0.5


def float_to_image(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `image_to_float` for display: float [..., 3, H, W] -> [0, 1]."""
    return (x + 0.5).clamp(0, 1)


class ConvEncoder(nn.Module):
    def __init__(self, image_size: int, depth: int) -> None:
        super().__init__()
        check_image_size(image_size)
        layers: list[nn.Module] = []
        channels = 3
        for i in range(ENCODER_LAYERS[image_size]):
            out = depth * 2 ** min(i, 3)
            layers += [nn.Conv2d(channels, out, 4, stride=2), nn.ReLU()]
            channels = out
        self.net = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            self.out_dim = int(self.net(torch.zeros(1, 3, image_size, image_size)).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float [N, 3, H, W] -> [N, out_dim]."""
        return self.net(x)


class ConvDecoder(nn.Module):
    def __init__(self, feat_dim: int, image_size: int, depth: int) -> None:
        super().__init__()
        check_image_size(image_size)
        kernels = DECODER_KERNELS[image_size]
        self.linear = nn.Linear(feat_dim, 32 * depth)
        layers: list[nn.Module] = []
        channels = 32 * depth
        for i, k in enumerate(kernels):
            last = i == len(kernels) - 1
            out = 3 if last else depth * 2 ** (len(kernels) - 2 - i)
            layers.append(nn.ConvTranspose2d(channels, out, k, stride=2))
            if not last:
                layers.append(nn.ReLU())
            channels = out
        self.net = nn.Sequential(*layers)
        self.image_size = image_size

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """[N, feat] -> mean image float [N, 3, H, W] (the likelihood is Normal(mean, 1))."""
        x = self.linear(feat)
        return self.net(x.reshape(x.shape[0], -1, 1, 1))
