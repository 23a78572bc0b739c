"""ModuleNet: knowledge-inherited neural architecture search (arXiv 2004.05020).

The stages, in the order data flows (each a subpackage; nothing imports a stage above it):
knowledge (architectures, modules, the knowledge base) -> stitching (ChP / ChDP and ours, the
trunk of a genotype) -> evaluation (the classifier of Sec. III-E, the score's terms) -> search
(NSGA-II, Eq. 4-8) -> finetune (the evaluation stage of Sec. IV) -> report; app/ runs them from
Hydra. Leaves every stage may use: errors, genotype (Sec. III-C), rng, rundir, targets, tracking,
runtime (devices, precision), data.
"""

from modulenet.errors import ModuleNetError

__version__ = "0.1.0"
__all__ = ["ModuleNetError", "__version__", "load_network"]


def __getattr__(name: str):
    """`modulenet.load_network(path)`: a saved network (finetune/network.py), imported on first
    use so that `import modulenet` stays light (the search and the report need no torch)."""
    if name == "load_network":
        from modulenet.finetune.network import load_network

        return load_network
    raise AttributeError(f"module 'modulenet' has no attribute {name!r}")
