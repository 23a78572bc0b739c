"""A training-free ranking of assembled architectures (ours, beside the paper's Eq. 4 score).

NASWOT (Mellor, Turner, Storkey, Crowley, "Neural Architecture Search without Training", ICML 2021),
as Deep Model Reassembly (Yang et al., NeurIPS 2022) uses it to rank reassembled networks: over one
mini-batch, each image's binary code is which ReLU units it switches on; the kernel
K[i, j] = units on in both + units off in both (the number of units minus the Hamming distance)
counts how alike two images' codes are, and the score is log |det K|. Higher: the network tells
the images apart better before any training. Here it reads the frozen trunk with its inherited
weights, so it scores the knowledge as well as the architecture. It needs no classifier training:
seconds per genotype.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = (nn.ReLU, nn.ReLU6)  # the units whose on/off pattern is the code; F.relu calls are not seen


@torch.no_grad()
def naswot_score(network: nn.Module, images: torch.Tensor) -> float:
    """log |det K| of the activation-code kernel of `network` over `images` (one mini-batch, eval mode)."""
    codes: list[torch.Tensor] = []

    def record(module, inputs, output):
        codes.append((output > 0).flatten(1))

    hooks = [m.register_forward_hook(record) for m in network.modules() if isinstance(m, ACTIVATIONS)]
    was_training = network.training
    try:
        network.eval()
        network(images)
    finally:
        network.train(was_training)
        for hook in hooks:
            hook.remove()
    if not codes:
        raise ValueError(f"{type(network).__name__} has no ReLU modules: NASWOT reads their on/off codes")
    on = torch.cat(codes, dim=1).double()
    kernel = on @ on.T + (1 - on) @ (1 - on).T
    return float(torch.linalg.slogdet(kernel).logabsdet)
