"""Bring your own model: any `nn.Module` cut into cells at named points with torch.fx.

A cut point names the node whose output ends a cell: a submodule path (`"layer2"`,
`"features.9"`) or an fx node name (`"relu_3"`, `"add_2"`). The last cut point ends the trunk;
what follows it (pooling, classifier) is dropped. Only one tensor may cross each cut, so a cut
inside a residual block (where the skip branch also crosses) is refused with its reason.

    from modulenet.knowledge import CutPointArchitecture, build_knowledge_base
    mine = CutPointArchitecture("mynet", "mypkg.models:MyNet", ["block1", "block2", "block3"])
    kb = build_knowledge_base([mine, "resnet_cifar20"], weights={"mynet": "mynet.pt"})

`model` is an import path (`"pkg.module:callable"`), a callable, or an instance whose current
weights are kept. A knowledge base holding it can be saved only if `model` is an import path.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence

import torch.fx as fx
from torch import nn

from modulenet.errors import KnowledgeBaseError, first_line
from modulenet.knowledge.architecture import Architecture


class CutPointArchitecture(Architecture):
    family = "cut_points"
    init_on_meta = False  # a user's model may hold non-persistent buffers that no checkpoint restores

    def __init__(
        self,
        name: str,
        model: str | Callable[..., nn.Module] | nn.Module,
        cut_points: Sequence[str],
        kwargs: dict | None = None,
    ):
        super().__init__(name)
        if isinstance(cut_points, str) or not cut_points:
            raise KnowledgeBaseError(f"{name}: cut_points must be a non-empty list of node names, got {cut_points!r}")
        self.model = model
        self.cut_points = [str(p) for p in cut_points]
        self.kwargs = dict(kwargs or {})

    @property
    def num_cells(self) -> int:  # type: ignore[override]
        return len(self.cut_points)

    def build(self) -> nn.Module:
        if isinstance(self.model, nn.Module):
            return copy.deepcopy(self.model)
        factory = _import(self.model, self.name) if isinstance(self.model, str) else self.model
        model = factory(**self.kwargs)
        if not isinstance(model, nn.Module):
            raise KnowledgeBaseError(f"{self.name}: {self.model!r} returned {type(model).__name__}, not an nn.Module")
        return model

    def cells(self, model: nn.Module) -> list[nn.Module]:
        return split_at_cut_points(model, self.cut_points, self.name)

    def to_config(self) -> dict:
        if not isinstance(self.model, str):
            raise KnowledgeBaseError(
                f"cannot save architecture {self.name!r}: give its model as an import path "
                "('package.module:factory') so a saved knowledge base can rebuild it"
            )
        return {
            "family": self.family,
            "name": self.name,
            "model": self.model,
            "cut_points": self.cut_points,
            "kwargs": self.kwargs,
        }

    @classmethod
    def from_config(cls, config: dict) -> CutPointArchitecture:
        return cls(config["name"], config["model"], config["cut_points"], config.get("kwargs"))


def split_at_cut_points(model: nn.Module, cut_points: Sequence[str], name: str = "model") -> list[fx.GraphModule]:
    """Cut `model` into len(cut_points) sequential GraphModules sharing its tensors."""
    submodules = dict(model.named_modules())
    leaves = {p for p in cut_points if p in submodules}

    class CutTracer(fx.Tracer):
        # a submodule named as a cut point becomes one node, so its output can end a cell
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname in leaves or super().is_leaf_module(m, qualname)

    try:
        traced = fx.GraphModule(model, CutTracer().trace(model))
    except Exception as err:  # fx raises many types for untraceable control flow
        raise KnowledgeBaseError(f"{name}: torch.fx cannot trace the model ({first_line(err)})") from None
    nodes = list(traced.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise KnowledgeBaseError(f"{name}: a model to decompose takes one input tensor, this one takes {len(inputs)}")
    by_name: dict[str, list[fx.Node]] = {}
    for node in nodes:
        by_name.setdefault(node.name, []).append(node)
        if node.op == "call_module" and str(node.target) != node.name:
            by_name.setdefault(str(node.target), []).append(node)
    ends = []
    for point in cut_points:
        if len(by_name.get(point, [])) > 1:
            raise KnowledgeBaseError(
                f"{name}: cut point {point!r} is called {len(by_name[point])} times; name one call's fx node instead"
            )
        if point not in by_name:
            valid = [
                str(n.target) if n.op == "call_module" else n.name
                for n in nodes
                if n.op not in ("placeholder", "output")
            ]
            raise KnowledgeBaseError(f"{name}: unknown cut point {point!r}; valid points are {valid}")
        ends.append(by_name[point][0])
    order = {node: i for i, node in enumerate(nodes)}
    if [order[e] for e in ends] != sorted(order[e] for e in ends) or len(set(ends)) != len(ends):
        raise KnowledgeBaseError(f"{name}: cut points {list(cut_points)} are not in the network's order")

    cells, start, boundary = [], 0, inputs[0]
    for cell_index, end in enumerate(ends):
        stop = order[end] + 1
        segment = [n for n in nodes[start:stop] if n.op not in ("placeholder", "output", "get_attr")]
        cells.append(_segment_module(traced, segment, boundary, end, f"{name} cell {cell_index + 1}"))
        start, boundary = stop, end
    return cells


def _segment_module(
    traced: fx.GraphModule, segment: list[fx.Node], boundary: fx.Node, end: fx.Node, what: str
) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {boundary: graph.placeholder("x")}

    def lookup(node: fx.Node) -> fx.Node:
        if node in env:
            return env[node]
        if node.op == "get_attr":  # parameters used functionally travel with their user
            env[node] = graph.node_copy(node, lookup)
            return env[node]
        raise KnowledgeBaseError(
            f"{what}: node {node.name!r} from an earlier cell crosses the cut at {boundary.name!r}; "
            "cut where the whole state is one tensor (between blocks, not inside a residual block)"
        )

    for node in segment:
        env[node] = graph.node_copy(node, lookup)
    graph.output(env[end])
    return fx.GraphModule(traced, graph)


def _import(path: str, name: str) -> Callable[..., nn.Module]:
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError):
        raise KnowledgeBaseError(
            f"{name}: cannot import model factory {path!r} (use 'package.module:callable')"
        ) from None
    return obj
