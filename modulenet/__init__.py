"""ModuleNet: knowledge-inherited neural architecture search (arXiv 2004.05020).

Rooms, top to bottom: knowledge (knowledge base of modules), connections (ChP / ChDP),
genotype (encoding, Sec. III-C), score (Eq. 4-8).
"""

from modulenet.errors import ModuleNetError

__version__ = "0.1.0"
__all__ = ["ModuleNetError", "__version__"]
