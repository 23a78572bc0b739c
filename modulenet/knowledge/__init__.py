"""The knowledge base (Sec. III-B, Algorithm 1 lines 1-6): trained networks decomposed into modules."""

from modulenet.knowledge.architecture import Architecture
from modulenet.knowledge.base import KnowledgeBase, load_knowledge_base
from modulenet.knowledge.build import build_knowledge_base
from modulenet.knowledge.cut_points import CutPointArchitecture
from modulenet.knowledge.timm_zoo import TimmArchitecture, timm_knowledge_base
from modulenet.knowledge.zoo import get_architecture, known_architectures

__all__ = [
    "Architecture",
    "CutPointArchitecture",
    "KnowledgeBase",
    "TimmArchitecture",
    "build_knowledge_base",
    "get_architecture",
    "known_architectures",
    "load_knowledge_base",
    "timm_knowledge_base",
]
