"""Joining modules of different networks (Sec. III-D): the connections between neighbouring
modules and the trunk they make.

- `connections`: the paper's parameter-free Channel Pool / DePool (ChP / ChDP) and our 1x1 convolution.
- `fitted`: ours, stitches fitted from data (channel alignment, least squares as SN-Net initialises them).
- `resolution`: ours, the rule that reconciles spatial resolutions between modules.
- `assembly`: a genotype's modules and connections as one trunk.
"""

# The fitted connections register themselves where they are defined: importing the package
# (as any import of its modules does) completes the connection registry.
from modulenet.stitching import fitted as _fitted  # noqa: E402,F401
