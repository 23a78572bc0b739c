"""The knowledge base of Algorithm 1 (lines 1-6): `modules[j][i]` is module_j^i = f_m(arch_i-cell_j).

Modules keep their trained weights. A knowledge base saves to one directory
(`knowledge_base.json` + `modules/<arch>.pt`) and loads back without downloading or probing,
so a search never rebuilds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from modulenet.errors import KnowledgeBaseError, ModuleNetError, WeightsError, first_line
from modulenet.genotype import Genotype, describe_genotype, parse_genotype, search_space_size
from modulenet.knowledge.architecture import Architecture
from modulenet.knowledge.zoo import architecture_from_config
from modulenet.rundir import atomic_path, write_atomic
from modulenet.stitching.assembly import ModuleSpec, Trunk, assemble
from modulenet.stitching.choices import get_connection
from modulenet.stitching.fitted import fitted_from_state, fitted_link, fitted_state
from modulenet.stitching.resolution import RESOLUTIONS, remove_reductions

log = logging.getLogger(__name__)

RANDOM_SOURCE = "random init"  # the source of an architecture built without trained weights

FORMAT_VERSION = 1
METADATA_FILE = "knowledge_base.json"
CONNECTIONS_FILE = "connections.pt"  # fitted connections (fit_connections), when there are any


class KnowledgeBase:
    """n architectures decomposed into c cells each: `modules[j][i]`, `specs[j][i]` (cell j, arch i)."""

    def __init__(
        self,
        architectures: Sequence[Architecture],
        modules: Sequence[Sequence[nn.Module]],
        specs: Sequence[Sequence[ModuleSpec]],
        image_size: int,
        sources: Sequence[str],
    ):
        self.architectures = list(architectures)
        self.modules = [list(row) for row in modules]
        self.specs = [list(row) for row in specs]
        self.image_size = int(image_size)
        self.sources = list(sources)
        self._weight_hashes: dict[str, str] | None = None
        self._reduced: dict[tuple[int, int, float], nn.Module | None] = {}  # resolution-rule views, made once
        # resolution -> {(position j, preceding arch, next arch): {"aligned": ..., "least_squares": ...}}
        self.fitted: dict[str, dict[tuple[int, int, int], dict[str, dict[str, torch.Tensor]]]] = {}
        self.fitted_images = 0
        for module in self.iter_modules():
            module.requires_grad_(False)
            module.eval()

    @property
    def arch_names(self) -> list[str]:
        return [a.name for a in self.architectures]

    @property
    def num_cells(self) -> int:
        """c: cells per architecture."""
        return len(self.modules)

    @property
    def num_archs(self) -> int:
        """n: architectures in the knowledge base."""
        return len(self.architectures)

    @property
    def search_space_size(self) -> int:
        """|Omega| = n^c (Sec. III-C)."""
        return search_space_size(self.num_archs, self.num_cells)

    def iter_modules(self):
        for row in self.modules:
            yield from row

    def parse_genotype(self, value) -> Genotype:
        """Validate a genotype (`"21111"`, `[1, 0, 0, 0, 0]`, arch names) against this knowledge base;
        a genotype it parsed already (a tuple of c valid indices) is returned as it is."""
        if self.is_parsed(value):
            return value
        return parse_genotype(value, self.arch_names, self.num_cells)

    def is_parsed(self, value) -> bool:
        """Whether `value` is a parsed genotype of this knowledge base: a tuple of c indices in [0, n)."""
        n = self.num_archs
        return (
            isinstance(value, tuple)
            and len(value) == self.num_cells
            and all(type(i) is int and 0 <= i < n for i in value)
        )

    def original_genotype(self, arch: str | int) -> Genotype:
        """The genotype that reassembles one source architecture: [i] * c."""
        index = arch if isinstance(arch, int) else self.parse_genotype([arch] * self.num_cells)[0]
        return (index,) * self.num_cells

    def describe(self, genotype) -> list[str]:
        return describe_genotype(self.parse_genotype(genotype), self.arch_names)

    def assemble(
        self, genotype, connection: str = "channel_pool", trainable: bool = False, resolution: str = "reduce"
    ) -> Trunk:
        """The architecture `genotype` as an nn.Module from images to the last cell's feature map.

        Frozen and in eval mode unless `trainable=True` (the fine-tuning stage), which copies
        the modules and unfreezes them. `resolution`: "reduce" (the paper's rule, Sec. III-B: a
        module that reduces more than its successor's native input loses its last reduction) or
        "resample" (the map is pooled or upsampled between modules); see stitching/resolution.py.
        """
        if resolution not in RESOLUTIONS:
            raise ModuleNetError(f"connection.resolution={resolution!r}: valid values are {list(RESOLUTIONS)}")
        code = self.parse_genotype(genotype)
        placed = [self.preceding(j, code[j], code[j + 1], resolution) for j in range(len(code) - 1)]
        placed.append((self.modules[-1][code[-1]], self.specs[-1][code[-1]], 1.0))
        modules, specs, removed = (list(column) for column in zip(*placed))
        links = None
        if get_connection(connection).fitted:
            links = {
                j: fitted_link(self, connection, resolution, j, code[j - 1], code[j])
                for j in range(1, len(code))
                if code[j - 1] != code[j]
            }
        return assemble(
            modules, specs, code, connection=connection, trainable=trainable, removed=removed, channel_links=links
        )

    def preceding(
        self, cell: int, arch: int, next_arch: int | None, resolution: str = "reduce"
    ) -> tuple[nn.Module, ModuleSpec, float]:
        """Module (cell, arch) as it runs before module (cell + 1, next_arch): with the resolution
        rule applied, its spec as it now is, and the reduction factor it lost (1: unchanged)."""
        module, spec = self.modules[cell][arch], self.specs[cell][arch]
        if next_arch is None or resolution != "reduce":
            return module, spec, 1.0
        factor = spec.out_reduction / self.specs[cell + 1][next_arch].in_reduction
        if factor <= 1 + 1e-9 or (view := self._reduced_view(cell, arch, factor)) is None:
            return module, spec, 1.0
        return (
            view,
            dataclasses.replace(
                spec,
                out_reduction=spec.out_reduction / factor,
                out_size=tuple(round(s * factor) for s in spec.out_size),
            ),
            factor,
        )

    def fit_connections(
        self,
        images: torch.Tensor,
        resolution: str = "reduce",
        batch_size: int = 256,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> KnowledgeBase:
        """Fit what the `aligned` and `least_squares` connections need at every boundary (preceding
        architecture, next architecture, position) from `images` (training images only, no
        gradient, no module changed); kept with the knowledge base and saved with it."""
        from modulenet.stitching.fitted import fit_boundaries

        self.fitted[resolution] = fit_boundaries(self, images, resolution, batch_size, torch.device(device), progress)
        self.fitted_images = int(len(images))
        return self

    def reinitialized(self, seed: int) -> KnowledgeBase:
        """The same architectures, cells and specs with none of the knowledge: each network built
        anew with its own random initialisation (`Architecture.build`), drawn from `seed` with the
        process's generators restored afterwards. A least-squares stitch becomes a 1x1 convolution
        with PyTorch's default initialisation. The control for inheritance (ours: the paper never
        trains its architectures from scratch); an `aligned` permutation, fitted to the inherited
        features, has no random counterpart and is not kept."""

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            columns = [arch.cells(arch.build()) for arch in self.architectures]
            fitted = {  # each fitted connection that has a random counterpart (a least-squares stitch does)
                resolution: {
                    key: {
                        name: get_connection(name).fitted.scratch(fit)
                        for name, fit in fits.items()
                        if get_connection(name).fitted.scratch is not None
                    }
                    for key, fits in boundaries.items()
                }
                for resolution, boundaries in self.fitted.items()
            }
        modules = [[columns[i][j] for i in range(self.num_archs)] for j in range(self.num_cells)]
        kb = KnowledgeBase(self.architectures, modules, self.specs, self.image_size, [RANDOM_SOURCE] * self.num_archs)
        kb.fitted, kb.fitted_images = fitted, 0
        return kb

    def _reduced_view(self, cell: int, arch: int, factor: float) -> nn.Module | None:
        """Module (cell, arch) with `factor` of its reduction removed, made once; None (with a
        warning, the boundary then resamples) where its reductions cannot be removed."""
        key = (cell, arch, round(factor, 6))
        if key not in self._reduced:
            spec = self.specs[cell][arch]
            view = remove_reductions(self.modules[cell][arch], (spec.in_channels, *spec.in_size), factor)
            if view is None:
                log.warning(
                    "%s module %d cannot drop a reduction of %g (stitching/resolution.py): the boundary after it "
                    "resamples instead",
                    self.arch_names[arch],
                    cell + 1,
                    factor,
                )
            self._reduced[key] = view
        return self._reduced[key]

    def output_spec(self, genotype) -> ModuleSpec:
        """The spec of the last module, whose output feeds the classifier."""
        code = self.parse_genotype(genotype)
        return self.specs[-1][code[-1]]

    def weight_hashes(self) -> dict[str, str]:
        """sha256 (16 hex digits) of each architecture's module tensors, cell by cell: what the weights
        are, whatever file or name they came from (a resumed search checks them). Computed once."""
        if self._weight_hashes is None:
            hashes = {}
            for i, name in enumerate(self.arch_names):
                digest = hashlib.sha256()
                for j, row in enumerate(self.modules):
                    for key, tensor in row[i].state_dict().items():
                        digest.update(f"{j}.{key}:{tensor.dtype}:{list(tensor.shape)}".encode())
                        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                hashes[name] = digest.hexdigest()[:16]
            self._weight_hashes = hashes
        return dict(self._weight_hashes)

    def to(self, device: torch.device | str) -> KnowledgeBase:
        for module in self.iter_modules():
            module.to(device)
        return self

    def summary(self) -> str:
        """A table of every module: channels and resolution at the knowledge base's image size."""
        lines = [
            f"knowledge base: n = {self.num_archs} architectures, c = {self.num_cells} cells, "
            f"|Omega| = {self.search_space_size}, image {self.image_size}x{self.image_size}"
        ]
        for i, name in enumerate(self.arch_names):
            cells = ", ".join(
                f"{s.in_channels}@{s.in_size[0]}->{s.out_channels}@{s.out_size[0]}"
                for s in (row[i] for row in self.specs)
            )
            lines.append(f"  [{i}] {name:<16} {cells}   ({self.sources[i]})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"KnowledgeBase(arch_names={self.arch_names}, num_cells={self.num_cells}, image_size={self.image_size})"

    # -- persistence ---------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the knowledge base to `directory`; metadata is written last, so a partial save never loads."""
        directory = Path(directory)
        (directory / "modules").mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(self.arch_names):
            state = {
                f"cell{j}.{key}": tensor.detach().cpu()
                for j, row in enumerate(self.modules)
                for key, tensor in row[i].state_dict().items()
            }
            atomic_torch_save(state, directory / "modules" / f"{name}.pt")
        metadata = self.metadata()
        if self.fitted:
            self.save_fitted(directory / CONNECTIONS_FILE)
        write_atomic(directory / METADATA_FILE, json.dumps(metadata, indent=2))
        return directory

    def metadata(self) -> dict:
        """What rebuilds this knowledge base's structure (architectures, cells, module specs):
        plain data, written beside its weights by `save` and into a saved network's description."""
        return {
            "format": FORMAT_VERSION,
            "arch_names": self.arch_names,
            "num_cells": self.num_cells,
            "image_size": self.image_size,
            "architectures": [a.to_config() for a in self.architectures],
            "sources": self.sources,
            "specs": [[dataclasses.asdict(s) for s in row] for row in self.specs],
            "fitted_images": self.fitted_images,
        }

    @classmethod
    def load(cls, directory: str | os.PathLike, trust_code: bool = False) -> KnowledgeBase:
        """Read a knowledge base written by `save`: tensors with weights_only=True, and no code that
        the directory names is imported or called unless `trust_code=True` (a cut-point model's
        factory is such code, as `trust_remote_code` in transformers)."""
        directory = Path(directory)
        meta_path = directory / METADATA_FILE
        if not meta_path.is_file():
            raise KnowledgeBaseError(f"{directory} is not a knowledge base directory: it has no {METADATA_FILE}")
        try:
            metadata = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise KnowledgeBaseError(f"{meta_path} is corrupt ({err})") from None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_VERSION:
            found = metadata.get("format") if isinstance(metadata, dict) else None
            raise KnowledgeBaseError(f"{meta_path} has format {found!r}; this modulenet reads {FORMAT_VERSION}")
        try:
            return cls.from_metadata(directory, metadata, trust_code)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            if isinstance(err, KnowledgeBaseError):
                raise
            what = f"lacks {err}" if isinstance(err, KeyError) else f"has a bad value ({first_line(err)})"
            raise KnowledgeBaseError(
                f"{meta_path} {what}: it was not written by KnowledgeBase.save or was edited"
            ) from None

    @classmethod
    def from_metadata(
        cls, directory: Path, metadata: dict, trust_code: bool, what: str = "a knowledge base", weights: bool = True
    ) -> KnowledgeBase:
        """The knowledge base `metadata` (from `directory`) describes, its weights read from
        there; with `weights=False`, its structure only (weights allocated, not initialised: the
        caller loads them, as a saved network does)."""
        configs = metadata["architectures"]
        code = [f"{c.get('name')}: {c.get('model')!r}" for c in configs if c.get("family") == "cut_points"]
        if code and not trust_code:
            raise KnowledgeBaseError(
                f"{directory} names code to import and call ({'; '.join(code)}): {what} is data, so it is "
                "loaded only with trust_code=True (knowledge_base.trust_code=true), if you trust where it came from"
            )
        architectures = [architecture_from_config(c) for c in configs]
        num_cells = metadata["num_cells"]
        columns = []
        for arch in architectures:
            cells = arch.cells(arch.build_empty())
            if not weights:
                columns.append(cells)
                continue
            path = directory / "modules" / f"{arch.name}.pt"
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise WeightsError(f"knowledge base {directory} lacks {path.name}") from None
            except Exception as err:
                raise WeightsError(f"cannot read {path}: corrupt or not a tensor file ({first_line(err)})") from None
            for j, cell in enumerate(cells):
                prefix = f"cell{j}."
                cell_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                try:
                    cell.load_state_dict(cell_state, strict=True)
                except RuntimeError as err:
                    raise WeightsError(f"{path} does not match {arch.name} cell {j + 1}: {first_line(err)}") from None
            columns.append(cells)
        modules = [[columns[i][j] for i in range(len(architectures))] for j in range(num_cells)]
        specs = [
            [ModuleSpec(**{**s, "in_size": tuple(s["in_size"]), "out_size": tuple(s["out_size"])}) for s in row]
            for row in metadata["specs"]
        ]
        kb = cls(architectures, modules, specs, metadata["image_size"], metadata["sources"])
        if weights and metadata.get("fitted_images") and (directory / CONNECTIONS_FILE).is_file():
            kb.load_fitted(directory / CONNECTIONS_FILE, int(metadata["fitted_images"]))
        return kb

    def save_fitted(self, path: str | os.PathLike) -> None:
        """The fitted connections alone, as a plain tensor file."""
        atomic_torch_save(fitted_state(self), Path(path))

    def load_fitted(self, path: str | os.PathLike, images: int) -> None:
        """Fitted connections saved by `save_fitted` for this knowledge base (read with weights_only=True)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise WeightsError(f"cannot read {path}: corrupt or not a tensor file ({first_line(err)})") from None
        self.fitted.update(fitted_from_state(self, state))
        self.fitted_images = int(images)


def load_cached_knowledge_base(directory: Path, trust_code: bool = False) -> KnowledgeBase | None:
    """A knowledge base this package cached (trained or fine-tuned sources), or None where there is
    none yet; a damaged one (corrupt or truncated files, another format) is set aside with a
    warning, never a failed run: the caller builds it again."""
    if not (directory / METADATA_FILE).is_file():
        return None
    try:
        return KnowledgeBase.load(directory, trust_code=trust_code)
    except (KnowledgeBaseError, WeightsError) as err:
        log.warning("cached knowledge base %s is damaged (%s): building it again", directory, err)
        shutil.rmtree(directory, ignore_errors=True)
        return None


def load_knowledge_base(directory: str | os.PathLike, trust_code: bool = False) -> KnowledgeBase:
    """Load a knowledge base saved with `KnowledgeBase.save` (or `modulenet-kb`); see `KnowledgeBase.load`."""
    return KnowledgeBase.load(directory, trust_code=trust_code)


def atomic_torch_save(obj, path: Path) -> None:
    """`torch.save` whole (rundir.atomic_path): a crash or a second writer never leaves a torn file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
