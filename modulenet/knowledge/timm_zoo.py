"""timm models as a knowledge base (Sec. III-B; issue 33): `knowledge_base=timm`.

Each network is cut into c modules at the stage boundaries timm itself publishes
(`feature_info`: each stage's output module, channels and reduction), so the modules keep
timm's weights and meet where timm's `features_only` networks hand out their feature maps.

Which boundaries (ours; the paper cuts its torchvision zoo by hand, Sec. IV-A): a boundary is a
reduction (2, 4, 8, 16, 32, ...). Only reductions that *every* architecture of the knowledge base
offers are candidates, and the c deepest of them are taken; module j of every architecture
then ends at the same reduction r_j and module j + 1 of every architecture starts there, so any
genotype's neighbouring modules meet at the same resolution and the resolution rule
(stitching/resolution.py) never has to remove a reduction. Where an architecture lists several
stages at one reduction, the deepest is the boundary. The first module holds everything before
the first boundary (stem and early stages); the last ends at the deepest common stage (timm's
final `feature_info` stage for most CNNs), whose output feeds the classifier. Fewer common
reductions than c is refused in one line listing each architecture's; so is an image size at
which the architectures' maps at a boundary differ in size (a size divisible by the deepest
reduction always works). resnet50, vgg16_bn, convnext_tiny and efficientnet_b0 share 4, 8, 16, 32.

The cut runs the model's top-level layers one after another, as timm's `FeatureListNet` does;
when the knowledge base is built each architecture's modules are checked against the model's
own `forward_intermediates` on a probe image (where timm has it), so a model whose forward is
not such a chain (a ViT's position embedding, a Swin's channels-last stages) is refused rather
than cut wrongly.

Weights come through timm's own loading (`timm.create_model(pretrained=True)`, strict, with
`weights_only=True`): per architecture `DEFAULT` (timm's default pretrained tag, from the Hugging
Face hub cache, downloaded once), another tag (`a1_in1k`: `resnet50.a1_in1k`), or a local file
(`pretrained_cfg_overlay=dict(file=...)`: a state dict of the same timm model, `.pth` or
`.safetensors`). Weights that cannot be loaded (no network and no cache, a missing file, a model
or tag without pretrained weights) are refused in one line, never replaced by random ones;
`null` is random init and needs `allow_random=true`. Images are normalised by the dataset (the
ImageNet mean and std), which is what these models were trained with; a timm model trained with
other statistics (some ViTs: 0.5) sees inputs normalised differently.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from modulenet.errors import KnowledgeBaseError, WeightsError, first_line
from modulenet.knowledge.architecture import Architecture
from modulenet.knowledge.weights import _file_head, _unsafe_pickle, is_checkpoint_path, is_random
from modulenet.knowledge.weights import _reason as _torch_reason

INSTALL = "pip install 'modulenet[timm]'"


def _timm():
    try:
        import timm
    except ImportError:
        raise KnowledgeBaseError(f"knowledge_base=timm needs timm, which is not installed: {INSTALL}") from None
    return timm


def check_model_name(name: str) -> None:
    """A model of timm's registry (`resnet50`, `resnet50.a1_in1k`); never a hub or local-dir
    address (`hf-hub:...`), which would fetch code-bearing configs when a saved base is read."""
    timm = _timm()
    if ":" in name or not timm.is_model(name):
        base = name.split(":")[-1].split(".")[0]
        close = timm.list_models(f"*{base}*")[:8]
        hint = f"; similar names: {close}" if close else ""
        raise KnowledgeBaseError(f"unknown timm model {name!r} (a name of timm.list_models()){hint}")


def stage_reductions(model: nn.Module) -> list[int]:
    """The reduction of each stage timm lists in the model's `feature_info`."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise KnowledgeBaseError(f"timm's {type(model).__name__} lists no feature_info stages to cut at")
    return [int(stage["reduction"]) for stage in info]


def model_stage_reductions(model_name: str) -> list[int]:
    """`stage_reductions` of timm's `model_name`, built without allocating its weights."""
    timm = _timm()
    check_model_name(model_name)
    try:
        with torch.device("meta"):
            model = timm.create_model(model_name, pretrained=False)
    except Exception:  # an init that needs real tensors: build it for real
        model = timm.create_model(model_name, pretrained=False)
    return stage_reductions(model)


def choose_reductions(reductions: Mapping[str, Sequence[int]], num_cells: int | None = None) -> list[int]:
    """The c deepest reductions every architecture has a stage at (None: all of them)."""
    common = sorted(set.intersection(*(set(r) for r in reductions.values())))
    if num_cells is not None and num_cells <= 0:
        raise KnowledgeBaseError(f"num_cells (c) must be a positive integer, got {num_cells}")
    wanted = len(common) if num_cells is None else num_cells
    if not common or wanted > len(common):
        listed = ", ".join(f"{name} {list(r)}" for name, r in reductions.items())
        raise KnowledgeBaseError(
            f"these timm models share {len(common)} stage reductions {common}, fewer than num_cells = {wanted}: "
            f"modules must meet at the same resolution (stage reductions: {listed})"
        )
    return common[-wanted:]


def stage_indices(model: nn.Module, reductions: Sequence[int], name: str) -> list[int]:
    """For each boundary reduction, the deepest of the model's `feature_info` stages at it."""
    have = stage_reductions(model)
    indices = []
    for r in reductions:
        at = [i for i, own in enumerate(have) if own == r]
        if not at:
            raise KnowledgeBaseError(f"{name}: timm lists no stage at reduction {r} (its stages: {have})")
        indices.append(at[-1])
    return indices


def cut_at_stages(model: nn.Module, indices: Sequence[int], name: str) -> list[nn.Sequential]:
    """The model's top-level layers up to stage `indices[-1]`, grouped into one module per stage
    (timm's FeatureListNet order: top-level children, Sequentials flattened when a stage sits in
    one), sharing the model's tensors."""
    from timm.models import FeatureListNet

    features = None
    for flatten in (False, True):
        try:
            features = FeatureListNet(model, out_indices=tuple(indices), flatten_sequential=flatten)
            break
        except AssertionError:  # a stage is not a top-level step without (or with) flattening
            continue
    if features is None:
        raise KnowledgeBaseError(
            f"{name}: timm's stages are not top-level steps of the model's forward, so it cannot be cut into modules"
        )
    cells, current = [], []
    for key, layer in features.items():
        current.append(layer)
        if key in features.return_layers:
            cells.append(nn.Sequential(*current))
            current = []
    return cells


class TimmArchitecture(Architecture):
    """A timm model cut at the stages of `reductions` (module docstring). `name` is its label in
    the knowledge base; `model` the timm name it is built from (default: `name`)."""

    family = "timm"
    init_on_meta = False  # timm models keep non-persistent buffers that no checkpoint restores

    def __init__(self, name: str, model: str | None = None, reductions: Sequence[int] = (4, 8, 16, 32)):
        super().__init__(name)
        self.model = str(model or name)
        self.reductions = tuple(int(r) for r in reductions)
        if not self.reductions or list(self.reductions) != sorted(set(self.reductions)):
            raise KnowledgeBaseError(
                f"{name}: reductions must be a non-empty increasing list of stage reductions, got {list(reductions)}"
            )

    @property
    def num_cells(self) -> int:  # type: ignore[override]
        return len(self.reductions)

    def build(self) -> nn.Module:
        check_model_name(self.model)
        return _timm().create_model(self.model, pretrained=False)

    def cells(self, model: nn.Module) -> list[nn.Module]:
        return cut_at_stages(model, stage_indices(model, self.reductions, self.name), self.name)

    def to_config(self) -> dict:
        return {**super().to_config(), "model": self.model, "reductions": list(self.reductions)}


def load_timm_model(arch: TimmArchitecture, spec) -> tuple[nn.Module, str, str]:
    """Timm's model for `arch` with the weights `spec` asks for (module docstring), loaded by timm;
    returns the model, where its weights came from, and the timm name it was built as."""
    timm = _timm()
    name, model_name = arch.name, arch.model
    if is_checkpoint_path(spec) or (isinstance(spec, str) and Path(spec).expanduser().is_file()):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file for timm model {name} not found: {path}")
        overlay, source = {"file": str(path)}, str(path)
    elif isinstance(spec, str):
        base = model_name.split(".")[0]
        if spec.upper() != "DEFAULT":
            model_name = f"{base}.{spec}"
        try:
            cfg = timm.models.get_pretrained_cfg(model_name)
        except RuntimeError:  # an unknown tag
            tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{base}.*")]
            raise WeightsError(
                f"timm has no pretrained tag {spec!r} for {base}: valid are {['DEFAULT', *tags]} or a weights file"
            ) from None
        if cfg and cfg.tag and "." not in model_name:  # the default tag, named: what the source records
            model_name = f"{base}.{cfg.tag}"
        where = cfg and (cfg.hf_hub_id or cfg.url or cfg.file)
        if not where:
            raise WeightsError(
                f"timm has no pretrained weights for {model_name}: give a weights file "
                f"(knowledge_base.weights={{{name}: FILE}}) or knowledge_base.allow_random=true"
            )
        overlay, source = None, f"timm {model_name} ({where})"
        # where timm keeps a download (timm prefers the hub where a model has both)
        cache = "the Hugging Face cache ($HF_HOME)" if cfg.hf_hub_id else f"{torch.hub.get_dir()}/checkpoints"
    else:
        raise KnowledgeBaseError(
            f"weights for timm model {name} must be DEFAULT, a pretrained tag, a file or null, got {spec!r}"
        )
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as err:  # timm, torch.load and huggingface_hub raise many types
        if overlay is not None:
            raise WeightsError(_file_refusal(err, path, model_name)) from None
        raise WeightsError(
            f"cannot load timm's pretrained weights for {model_name} ({_reason(err)}); without network access "
            f"fill {cache} once, or give a file: knowledge_base.weights={{{name}: FILE}}"
        ) from None
    return model, source, model_name


def check_cut(model: nn.Module, cells: Sequence[nn.Module], indices: Sequence[int], name: str, image_size: int):
    """The modules run one after another on a probe image: each runs, none changes its input in
    place (a cached boundary map would change), and each gives the model's own output of its
    stage (`forward_intermediates`, where timm has it for this model and size)."""
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            try:
                expected = model.forward_intermediates(x, indices=list(indices), intermediates_only=True)
            except Exception:  # none for this model or size: the modules are only run
                expected = None
            y = x
            for j, cell in enumerate(cells):
                before = y.clone()
                try:
                    out = cell(y)
                except Exception as err:  # a model's own code raises any type on a wrong input
                    raise KnowledgeBaseError(
                        f"{name}: module {j + 1} fails on a {image_size}x{image_size} image run stage by stage "
                        f"({first_line(err)}): the image is too small for it, or its forward is not a chain of "
                        "its stages"
                    ) from None
                if not torch.equal(before, y):
                    raise KnowledgeBaseError(
                        f"{name}: module {j + 1} changes its input in place; it cannot be a module"
                    )
                want = None if expected is None else expected[j]
                if want is not None and (
                    out.shape != want.shape or not torch.allclose(out, want, rtol=1e-4, atol=1e-5)
                ):
                    raise KnowledgeBaseError(
                        f"{name}: module {j + 1} does not give timm's stage {indices[j]} output (shape "
                        f"{tuple(out.shape)} vs {tuple(want.shape)}): the model's forward is not a chain of its "
                        "stages, so it cannot be cut into modules"
                    )
                y = out
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode


_NOT_HERE = {"quickstart": False, "train_epochs": 0, "source_finetune_epochs": 0, "cifar_stem": None}


def timm_knowledge_base(
    archs: Sequence[str],
    num_cells: int | None = None,
    weights="DEFAULT",
    image_size: int = 32,
    allow_random: bool = False,
    path: str | os.PathLike | None = None,
    trust_code: bool = False,
    progress: bool = True,
    reductions: Sequence[int] | None = None,
    **settings,
):
    """The knowledge_base group's `timm` choice: timm models cut at common stage reductions
    (module docstring), as a `KnowledgeBase`.

    archs: timm model names (`resnet50`, `convnext_tiny`, `resnet50.a1_in1k`), in the order that
        genotype integers refer to.
    num_cells: c (None: every common reduction).
    weights: one spec for all or {arch: spec}: `DEFAULT`, a pretrained tag, a file, or null.
    reductions: the boundaries themselves (Python only; default: the c deepest common ones).
    path: a saved knowledge base to load instead (`modulenet-kb` output).
    `settings`: the group's other keys and what the app passes (datamodule, seed, trainer),
    unused; a training setting of the built-in knowledge base is refused, it cannot take effect.
    """
    # base and build import zoo, which registers this module's architecture family
    from modulenet.knowledge.base import RANDOM_SOURCE, KnowledgeBase, load_knowledge_base
    from modulenet.knowledge.build import measure_specs, weights_per_arch

    if path:
        return load_knowledge_base(path, trust_code=trust_code)
    for key, default in _NOT_HERE.items():
        if settings.get(key) not in (None, default):
            raise KnowledgeBaseError(
                f"knowledge_base.{key}={settings[key]} cannot take effect with knowledge_base=timm "
                "(its modules keep timm's weights)"
            )
    archs = [str(a) for a in archs or ()]
    if not archs:
        raise KnowledgeBaseError("knowledge_base.archs is empty: name timm models, e.g. [resnet50,convnext_tiny]")
    if image_size <= 0:
        raise KnowledgeBaseError(f"image_size must be a positive number of pixels, got {image_size}")
    duplicates = sorted({a for a in archs if archs.count(a) > 1})
    if duplicates:
        raise KnowledgeBaseError(f"architecture names must be unique in a knowledge base, repeated: {duplicates}")
    specs_by_arch = weights_per_arch(weights, archs)
    untrained = [a for a, spec in specs_by_arch.items() if is_random(spec)]
    if untrained and not allow_random:
        raise KnowledgeBaseError(
            f"timm models {untrained} have no weights (knowledge_base.weights null): use DEFAULT (timm's pretrained), "
            f"a tag or a file (knowledge_base.weights={{{untrained[0]}: FILE}}), or knowledge_base.allow_random=true"
        )
    if reductions is None:
        reductions = choose_reductions({a: model_stage_reductions(a) for a in archs}, num_cells)
    elif num_cells is not None and num_cells != len(reductions):
        raise KnowledgeBaseError(f"num_cells = {num_cells} but {len(reductions)} reductions {list(reductions)}")

    architectures, columns, spec_columns, sources = [], [], [], []
    for name in tqdm(archs, desc="knowledge base (timm)", unit="arch", disable=not progress):
        check_model_name(name)
        arch = TimmArchitecture(name, reductions=reductions)
        spec = specs_by_arch[name]
        if is_random(spec):
            model, source = arch.build(), RANDOM_SOURCE
        else:
            model, source, model_name = load_timm_model(arch, spec)
            arch = TimmArchitecture(name, model=model_name, reductions=reductions)
        model.eval()
        cells = arch.cells(model)
        check_cut(model, cells, stage_indices(model, arch.reductions, name), name, image_size)
        spec_columns.append(measure_specs(name, cells, image_size))
        architectures.append(arch)
        columns.append(cells)
        sources.append(source)
    for j in range(len(reductions) - 1):
        sizes = {archs[i]: col[j].out_size for i, col in enumerate(spec_columns)}
        if len(set(sizes.values())) > 1:
            raise KnowledgeBaseError(
                f"at {image_size} px the modules ending at reduction {reductions[j]} give maps of different sizes "
                f"{sizes}: use an image size divisible by {max(reductions)}"
            )
    c = len(reductions)
    modules = [[col[j] for col in columns] for j in range(c)]
    specs = [[col[j] for col in spec_columns] for j in range(c)]
    return KnowledgeBase(architectures, modules, specs, image_size, sources)


def _file_refusal(err: BaseException, path: Path, model_name: str) -> str:
    """Why timm could not load a weights file, in this package's words: torch's refusal of an unsafe
    pickle (timm wraps it) never passes on its advice to load the file unsafely."""
    cause = err.__cause__
    if isinstance(cause, pickle.UnpicklingError):
        unsafe = _unsafe_pickle(cause, _file_head(path))
        if unsafe:
            return f"refused to load {path}: {unsafe}"
        return f"cannot read weights file {path}: corrupt or not a torch checkpoint ({_torch_reason(cause)})"
    return f"cannot load {path} into timm's {model_name}: {_reason(err)}"


def _reason(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError) and not str(err):  # timm's own raises it without a message
        return "file not found"
    if type(err).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):  # huggingface_hub's, a paragraph
        return "not in the local cache, and the hub cannot be reached"
    return first_line(err)
