"""`modulenet-report`: the paper's tables and figures (Sec. IV-V) filled with this project's numbers.

Inputs are finished run directories: search runs (`results.json`, `evaluations.csv`,
`config_resolved.yaml`, optionally `ablation_connections.json`), fine-tune runs
(`finetune.json`), or multirun sweep directories whose numbered subdirectories are runs.
Outputs, in one directory: `report.md` and its PNG figures

- `score_curves.png`: population min / mean and best-so-far score per generation, one colour per run;
- `new_survival.png`: new survival per generation, every run in one plot (Fig. 9);
- `architecture_<run>.png`: the best genotype as c coloured modules (Figs. 5-7);
- `fig8_<finetune run>.png`: search score vs fine-tuned test error, Spearman and Kendall (Fig. 8);
- `fig10_<run>.png`: parameter-free vs 1x1-conv connections, validation accuracy (Fig. 10);
- `sweep_alpha_beta.png`: best fine-tuned (else validation) error per (alpha, beta) of a sweep;
- `calibration_rho.png` (`calibrate=true`): Spearman(score, test error) over an (alpha, beta) grid.

The paper's own numbers (Tables I-IV) are data here (`PAPER_TABLES`), printed beside the
measured ones; a row without a paper counterpart says so. No torch: plain JSON/CSV/YAML,
numpy and matplotlib (Figure + Agg canvas, no pyplot).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modulenet import rundir
from modulenet.correlation import kendall, spearman, spearman_rows
from modulenet.errors import ModuleNetError
from modulenet.genotype import format_genotype, parse_genotype, search_space_size
from modulenet.records import WORST_SCORE
from modulenet.rundir import read_evaluations
from modulenet.score import search_score

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
MIN_CALIBRATION_POINTS = 3

# --------------------------------------------------------------------------- the paper's numbers


@dataclass(frozen=True)
class PaperRow:
    """One row of a table of the paper, and which measured row it compares with.

    `kind`: best_original (the lowest test error among originals whose name starts with one of
    `names`), original (the original named one of `names`), best_searched (the best "ModuleNet #k"
    row; `cutout` True/False restricts it to fine-tuning with/without cutout), hybrid (a searched
    or given architecture whose cell 1 is `names[0]` and whose other cells are all `names[1]`).
    """

    method: str
    errors: tuple[float, ...]  # test error in %, (top-1,) or (top-1, top-5)
    kind: str
    names: tuple[str, ...] = ()
    cutout: bool | None = None
    note: str = ""


@dataclass(frozen=True)
class PaperTable:
    key: str
    caption: str
    dataset: str
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]
    knowledge_base: tuple[str, ...] = ()


CRAFT_KB = ("resnet34", "resnet50", "resnet101", "vgg13", "vgg16", "vgg13_bn", "vgg16_bn")

PAPER_TABLES: dict[str, PaperTable] = {
    "I": PaperTable(
        "I",
        "Table I: CIFAR-100, craft knowledge base (3 ResNets, 4 VGGs), fine-tuned with cutout 16",
        "cifar100",
        ("Test Error",),
        (
            PaperRow("Best for ResNets + cutout", (22.97,), "best_original", ("resnet",)),
            PaperRow("Best for VGGs + cutout", (28.27,), "best_original", ("vgg",)),
            PaperRow("ModuleNet (Ours) + cutout", (15.87,), "best_searched"),
        ),
        CRAFT_KB,
    ),
    "II": PaperTable(
        "II",
        "Table II: CIFAR-10, craft knowledge base (3 ResNets, 4 VGGs)",
        "cifar10",
        ("Test Error",),
        (
            PaperRow(
                "Best for ResNets", (6.43,), "best_original", ("resnet",), note="obtained directly from He et al."
            ),
            PaperRow("Best for VGGs", (6.27,), "best_original", ("vgg",)),
            PaperRow("ModuleNet (Ours)", (5.81,), "best_searched", cutout=False),
            PaperRow("ModuleNet (Ours) + cutout", (4.64,), "best_searched", cutout=True),
        ),
        CRAFT_KB,
    ),
    "III": PaperTable(
        "III",
        "Table III: CIFAR-10, knowledge base of NAS-searched modules (DARTS family), cutout",
        "cifar10",
        ("Test Error",),
        (
            PaperRow("DARTSv2 + cutout", (2.86,), "original", ("dartsv2", "darts")),
            PaperRow("PDARTS + cutout", (2.91,), "original", ("pdarts",)),
            PaperRow("PC-DARTS-cifar + cutout", (2.87,), "original", ("pcdartscifar",)),
            PaperRow("PC-DARTS-image + cutout", (2.8,), "original", ("pcdartsimage",)),
            PaperRow("ModuleNet (Ours) + cutout", (2.77,), "best_searched"),
        ),
        ("darts_v2", "pdarts", "pc_darts_cifar", "pc_darts_image"),
    ),
    "IV": PaperTable(
        "IV",
        "Table IV: ImageNet, cell 1 of VGG13bn in front of a ResNet",
        "imagenet",
        ("Test Error top1", "Test Error top5"),
        (
            PaperRow("VGG13bn", (28.45, 9.63), "original", ("vgg13bn",)),
            PaperRow("ResNet-50", (23.85, 7.13), "original", ("resnet50",)),
            PaperRow("VGG13bn+ResNet-50", (22.744, 6.396), "hybrid", ("vgg13bn", "resnet50")),
            PaperRow("ResNet-101", (22.63, 6.44), "original", ("resnet101",)),
            PaperRow("VGG13bn+ResNet-101", (21.308, 5.802), "hybrid", ("vgg13bn", "resnet101")),
        ),
        ("vgg13_bn", "resnet50", "resnet101"),
    ),
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def paper_table_for(dataset: str | None, arch_names: Sequence[str] | None) -> PaperTable | None:
    """The table of the paper for a dataset key (see `dataset_key`): CIFAR-100 -> I; CIFAR-10 -> III
    when the knowledge base holds DARTS-family modules, else II; ImageNet -> IV; otherwise None."""
    if dataset == "cifar100":
        return PAPER_TABLES["I"]
    if dataset == "cifar10":
        if any("darts" in _norm(a) for a in arch_names or ()):
            return PAPER_TABLES["III"]
        return PAPER_TABLES["II"]
    if dataset == "imagenet":
        return PAPER_TABLES["IV"]
    return None


def dataset_key(dataset_cfg) -> str | None:
    """cifar10 | cifar100 | imagenet | quickstart | the data module's class name, from a config's `dataset`."""
    if not isinstance(dataset_cfg, dict):
        return None
    target = str(dataset_cfg.get("_target_", ""))
    text = (
        target + " " + str(dataset_cfg.get("path", "") or "") + " " + str(dataset_cfg.get("root", "") or "")
    ).lower()
    cls = target.rsplit(".", 1)[-1].lower()
    if "cifar100" in cls:
        return "cifar100"
    if "cifar10" in cls:
        return "cifar10"
    if "quickstart" in cls:
        return "quickstart"
    if "imagefolder" in cls or "imagenet" in cls:
        return "imagenet" if "imagenet" in text else cls or None
    for key in ("cifar100", "cifar10", "imagenet"):  # an npz / folder named after its data
        if key in text:
            return key
    return cls or None


# --------------------------------------------------------------------------- reading runs


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModuleNetError(f"{path} is unreadable: {str(err).splitlines()[0]}") from None


def _read_config(run_dir: Path) -> dict:
    path = run_dir / rundir.CONFIG
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    except Exception as err:  # a YAML or OmegaConf error: the report goes on without the config
        log.warning("cannot read %s: %s", path, str(err).splitlines()[0])
        return {}


def _float(value, default=math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _run_label(path: Path, name: str | None) -> str:
    """`<dir>`, or `<config name>#<job>` for a multirun job (its directory is just a number)."""
    if path.name.isdigit():
        return f"{name or path.parent.name}#{path.name}"
    return path.name


@dataclass
class SearchRun:
    path: Path
    results: dict
    evaluations: list[dict]
    config: dict
    ablation: dict | None = None
    wandb: dict | None = None
    label: str = ""
    linked_only: bool = False  # not given, found through a fine-tune run's search_run

    @property
    def search_cfg(self) -> dict:
        return self.config.get("search") or {}

    @property
    def alpha(self) -> float | None:
        value = self.search_cfg.get("alpha")
        return None if value is None else float(value)

    @property
    def beta(self) -> float | None:
        value = self.search_cfg.get("beta")
        return None if value is None else float(value)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def dataset(self) -> str | None:
        return dataset_key(self.config.get("dataset"))

    @property
    def arch_names(self) -> list[str]:
        names = self.results.get("arch_names")
        if names:
            return list(names)
        archs = (self.config.get("knowledge_base") or {}).get("archs") or []
        if len(archs) == self.num_archs:
            return [str(a) for a in archs]
        return [f"arch {i}" for i in range(self.num_archs)]

    @property
    def num_archs(self) -> int:
        return int(self.results.get("num_archs") or 0)

    @property
    def num_cells(self) -> int:
        return int(self.results.get("num_cells") or len(self.results["best"]["genotype"]))

    @property
    def history(self) -> list[dict]:
        return list(self.results.get("history") or [])

    @property
    def best(self) -> dict:
        return self.results["best"]

    def new_survival(self) -> list[tuple[int, int]]:
        """(generation, new survival) per generation: from `populations` when results.json has it
        (Sec. V-B: distinct genotypes of pop_i not in pop_{i-1}), else from the history."""
        populations = self.populations()
        if populations:
            out, previous = [], set()
            for generation, population in enumerate(populations, start=1):
                current = set(population)
                out.append((generation, len(current - previous)))
                previous = current
            return out
        return [(int(row["generation"]), int(row["new_survival"])) for row in self.history]

    def populations(self) -> list[list[tuple[int, ...]]]:
        raw = self.results.get("populations")
        if not raw:
            return []
        out = []
        for population in raw:
            out.append(
                [
                    parse_genotype(g, self.num_archs, self.num_cells)
                    if not isinstance(g, (list, tuple))
                    else tuple(int(i) for i in g)
                    for g in population
                ]
            )
        return out

    def evaluation_by_genotype(self) -> dict[tuple[int, ...], dict]:
        out = {}
        for row in self.evaluations:
            if row.get("status", "ok") == "ok":
                out[row["genotype"]] = row
        return out


@dataclass
class FinetuneRun:
    path: Path
    settings: dict
    results: list[dict]
    config: dict
    search_run_path: Path | None = None
    search: SearchRun | None = None
    wandb: dict | None = None
    label: str = ""

    @property
    def cutout(self) -> int | None:
        value = (self.config.get("finetune") or {}).get("cutout", self.settings.get("cutout"))
        return None if value is None else int(value)

    @property
    def epochs(self) -> int | None:
        value = self.settings.get("epochs", (self.config.get("finetune") or {}).get("epochs"))
        return None if value is None else int(value)

    @property
    def dataset(self) -> str | None:
        return self.search.dataset if self.search else None

    @property
    def arch_names(self) -> list[str]:
        if self.search:
            return self.search.arch_names
        return [r["label"] for r in self.results if not is_searched(r)]

    def searched(self) -> list[dict]:
        return [r for r in self.results if is_searched(r)]


def is_searched(row: dict) -> bool:
    """A fine-tune row of a searched architecture ("ModuleNet #k"), not an original of the knowledge base."""
    return str(row.get("label", "")).startswith(("ModuleNet", "searched"))


@dataclass
class Runs:
    search: list[SearchRun] = field(default_factory=list)
    finetune: list[FinetuneRun] = field(default_factory=list)
    ablation_only: list[SearchRun] = field(default_factory=list)  # a directory with ablation_connections.json only


def _is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in (rundir.RESULTS, rundir.FINETUNE, rundir.ABLATION))


def expand_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories: each path itself, or for a sweep directory its numbered job subdirectories."""
    if not paths:
        raise ModuleNetError("no runs to report on: give runs=[<search run>,<finetune run>,<sweep dir>,...]")
    out: list[Path] = []
    for raw in paths:
        path = Path(str(raw)).expanduser()
        if not path.is_dir():
            raise ModuleNetError(f"run {raw} is not a directory" if path.exists() else f"run {raw} does not exist")
        if _is_run_dir(path):
            out.append(path)
            continue
        jobs = sorted(
            (p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and _is_run_dir(p)), key=lambda p: int(p.name)
        )
        if not jobs:
            raise ModuleNetError(
                f"{raw} is not a run: it has no results.json (search), finetune.json (fine-tune) "
                "or numbered run subdirectories (a multirun sweep)"
            )
        out.extend(jobs)
    unique = list(dict.fromkeys(p.resolve() for p in out))
    return [Path(p) for p in unique]


def read_search_run(path: Path) -> SearchRun:
    results = _read_json(path / rundir.RESULTS)
    for key in ("best", "history"):
        if key not in results:
            raise ModuleNetError(f"{path / 'results.json'} is not a search's results: it has no {key!r}")
    run = SearchRun(path, results, read_evaluations(path, results.get("num_cells")), _read_config(path))
    if (path / rundir.ABLATION).is_file():
        run.ablation = _read_json(path / rundir.ABLATION)
    if (path / "wandb_run.json").is_file():
        run.wandb = _read_json(path / "wandb_run.json")
    run.label = _run_label(path, run.config.get("name"))
    return run


def read_finetune_run(path: Path) -> FinetuneRun:
    data = _read_json(path / rundir.FINETUNE)
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ModuleNetError(f"{path / 'finetune.json'} is not a fine-tune's results: it has no 'results' list")
    for row in data["results"]:
        for key in ("label", "genotype", "test_error"):
            if key not in row:
                raise ModuleNetError(f"{path / 'finetune.json'} has a result without {key!r}: {row}")
    config = _read_config(path)
    if not config and (path.parent / rundir.RESULTS).is_file():  # <search run>/finetune/: the search's config
        config = {"finetune": _read_config(path.parent).get("finetune") or {}}
    search_run = data.get("search_run") or config.get("search_run")
    run = FinetuneRun(
        path, dict(data.get("settings") or {}), list(data["results"]), config, Path(search_run) if search_run else None
    )
    if (path / "wandb_run.json").is_file():
        run.wandb = _read_json(path / "wandb_run.json")
    run.label = _run_label(path, config.get("name"))
    return run


def load_runs(paths: Sequence[str | Path]) -> Runs:
    """Read every run; a fine-tune run's search run is read too when it was not given but exists."""
    runs = Runs()
    for path in expand_runs(paths):
        if (path / rundir.RESULTS).is_file():
            runs.search.append(read_search_run(path))
        elif (path / rundir.ABLATION).is_file():
            ablation = _read_json(path / rundir.ABLATION)
            runs.ablation_only.append(
                SearchRun(
                    path,
                    {"best": {}, "history": []},
                    [],
                    _read_config(path),
                    ablation=ablation,
                    label=_run_label(path, None),
                )
            )
        if (path / rundir.FINETUNE).is_file():
            runs.finetune.append(read_finetune_run(path))
        if (path / rundir.FINETUNE_DIR / rundir.FINETUNE).is_file():  # modulenet-search finetune.after_search=true
            runs.finetune.append(read_finetune_run(path / "finetune"))
    by_path = {run.path.resolve(): run for run in runs.search}
    for ft in runs.finetune:
        if ft.search_run_path is None:
            if len(runs.search) == 1:  # the only search given
                ft.search = runs.search[0]
            continue
        candidates = [ft.search_run_path, ft.path / ft.search_run_path]
        for candidate in candidates:
            key = candidate.resolve() if candidate.exists() else None
            if key in by_path:
                ft.search = by_path[key]
                break
            if key is not None and (candidate / rundir.RESULTS).is_file():
                linked = read_search_run(candidate)
                linked.linked_only = True
                runs.search.append(linked)
                by_path[key] = linked
                ft.search = linked
                break
        else:
            log.warning(
                "%s: its search run %s was not found; its dataset and search terms are unknown",
                ft.path,
                ft.search_run_path,
            )
    _unique_labels([*runs.search, *runs.ablation_only])
    _unique_labels(runs.finetune)
    return runs


def _unique_labels(runs: list) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        base = run.label or run.path.name
        seen[base] = seen.get(base, 0) + 1
        run.label = base if seen[base] == 1 else f"{base}~{seen[base]}"


# --------------------------------------------------------------------------- formatting helpers


def _pct(value, digits: int = 2) -> str:
    value = _float(value)
    return "—" if not math.isfinite(value) else f"{100 * value:.{digits}f}"


def _num(value, digits: int = 4) -> str:
    value = _float(value)
    if not math.isfinite(value) or value >= WORST_SCORE:
        return "—"
    return f"{value:.{digits}f}"


def _g(value) -> str:
    return "?" if value is None else f"{value:g}"


def _corr(value: float) -> str:
    return "undefined" if not math.isfinite(value) else f"{value:.3f}"


def _file_stem(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines


def _architecture(code: Sequence[int], arch_names: Sequence[str]) -> str:
    return "+".join(arch_names[i] if 0 <= i < len(arch_names) else str(i) for i in code)


# --------------------------------------------------------------------------- figures


def _figure(width: float, height: float):
    """A matplotlib Figure on an Agg canvas: no pyplot, no global backend, no GUI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colours(k: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    if k <= cmap.N:
        return [cmap(i) for i in range(k)]
    return [colormaps["hsv"](i / k) for i in range(k)]


def _series(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(_float(v)) and _float(v) < WORST_SCORE else math.nan for v in map(_float, values)]


def plot_score_curves(runs: Sequence[SearchRun], path: Path) -> None:
    """Population min and mean score (left) and best score so far (right) per generation, a colour per run."""
    fig = _figure(11, 4.2)
    population, best = fig.subplots(1, 2)
    for run, colour in zip(runs, _colours(len(runs))):
        generations = [row["generation"] for row in run.history]
        label = f"{run.label} (α={_g(run.alpha)}, β={_g(run.beta)})"
        population.plot(
            generations,
            _series(row.get("mean") for row in run.history),
            color=colour,
            marker=".",
            label=f"{label} mean",
        )
        population.plot(
            generations,
            _series(row.get("min") for row in run.history),
            color=colour,
            linestyle=":",
            label=f"{label} min",
        )
        best.plot(
            generations, _series(row.get("best_score") for row in run.history), color=colour, marker=".", label=label
        )
    population.set(
        xlabel="generation",
        ylabel="score (Eq. 4, lower is better)",
        title="Population score: mean (solid), min (dotted)",
    )
    best.set(xlabel="generation", ylabel="best score so far", title="Best score so far")
    best.legend(fontsize="small")
    for axis in (population.xaxis, best.xaxis):
        axis.get_major_locator().set_params(integer=True)
    fig.savefig(path, dpi=100)


def plot_new_survival(runs: Sequence[SearchRun], path: Path) -> None:
    """Fig. 9: new survival per generation, every run in one plot."""
    fig = _figure(7, 4.2)
    ax = fig.subplots()
    for run, colour in zip(runs, _colours(len(runs))):
        points = run.new_survival()
        ax.plot(
            [g for g, _ in points],
            [s for _, s in points],
            marker="o",
            color=colour,
            label=f"{run.label} (α={_g(run.alpha)}, β={_g(run.beta)})",
        )
    ax.set(
        xlabel="generation i",
        ylabel="genotypes of pop_i not in pop_{i-1}",
        title="New survival between generations (Fig. 9)",
    )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def plot_architecture(code: Sequence[int], arch_names: Sequence[str], title: str, path: Path) -> None:
    """Figs. 5-7: the genotype as c boxes from input to classifier, coloured by source architecture."""
    from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

    colours = _colours(max(1, len(arch_names)))
    c = len(code)
    fig = _figure(max(5.0, 1.5 * c + 2.5), 2.8)
    ax = fig.subplots()
    width, gap = 1.0, 0.45
    x = 0.0
    ax.text(x - 0.15, 0.5, "input", ha="right", va="center")
    for j, i in enumerate(code):
        colour = colours[i % len(colours)] if arch_names else (0.7, 0.7, 0.7, 1.0)
        ax.add_patch(Rectangle((x, 0.0), width, 1.0, facecolor=colour, edgecolor="black", linewidth=1.2))
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        name = arch_names[i] if 0 <= i < len(arch_names) else str(i)
        ax.text(
            x + width / 2,
            0.5,
            f"cell {j + 1}\n{name}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if luminance < 0.5 else "black",
            wrap=True,
        )
        if j < c - 1:
            ax.add_patch(FancyArrowPatch((x + width, 0.5), (x + width + gap, 0.5), arrowstyle="-|>", mutation_scale=10))
        x += width + gap
    ax.add_patch(FancyArrowPatch((x - gap, 0.5), (x, 0.5), arrowstyle="-|>", mutation_scale=10))
    ax.text(x + 0.05, 0.5, "classifier", ha="left", va="center")
    ax.set_xlim(-1.0, x + 1.3)
    ax.set_ylim(-0.1, 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    handles = [Patch(facecolor=colours[k], edgecolor="black", label=name) for k, name in enumerate(arch_names)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8)
    fig.savefig(path, dpi=100)


def plot_score_vs_error(rows: Sequence[dict], rho: float, tau: float, title: str, path: Path) -> None:
    """Fig. 8: architectures sorted by search score (descending), score and fine-tuned test error beside."""
    rows = sorted(rows, key=lambda r: -r["score"])
    xs = np.arange(1, len(rows) + 1)
    fig = _figure(max(6.0, 0.45 * len(rows) + 3), 4.2)
    ax = fig.subplots()
    ax.plot(xs, [r["score"] for r in rows], marker="o", color="tab:blue", label="search score")
    ax.set(xlabel="architectures, sorted by search score (descending)", ylabel="search score (Eq. 4)")
    ax.tick_params(axis="y", colors="tab:blue")
    twin = ax.twinx()
    twin.plot(xs, [100 * r["test_error"] for r in rows], marker="s", color="tab:red", label="test error")
    twin.set_ylabel("fine-tuned test error (%)")
    twin.tick_params(axis="y", colors="tab:red")
    ax.set_xticks(xs, [r["short"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_title(f"{title}\nSpearman ρ = {_corr(rho)}, Kendall τ = {_corr(tau)} (n = {len(rows)})", fontsize=9)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="small")
    fig.savefig(path, dpi=100)


def plot_connections(
    rows: Sequence[dict],
    key_a: str,
    others: Sequence[tuple[str, str, float, float]],
    label_a: str,
    title: str,
    path: Path,
) -> None:
    """Fig. 10: validation accuracy with each connection, architectures sorted by the search's.
    `others`: (key, label, Spearman, Kendall) of each compared connection."""
    rows = sorted(rows, key=lambda r: -r[key_a])
    xs = np.arange(1, len(rows) + 1)
    fig = _figure(max(6.0, 0.3 * len(rows) + 3), 4.2)
    ax = fig.subplots()
    ax.plot(xs, [100 * r[key_a] for r in rows], marker="o", label=label_a)
    for (key, label, rho, tau), marker in zip(others, "s^vDP*"):
        ax.plot(xs, [100 * r[key] for r in rows], marker=marker, label=f"{label} (ρ = {_corr(rho)}, τ = {_corr(tau)})")
    ax.set(xlabel=f"architectures, sorted by {label_a} (descending)", ylabel="validation accuracy (%)")
    ax.set_title(f"{title} (n = {len(rows)})", fontsize=9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    fig.savefig(path, dpi=100)


def plot_heatmap(
    alphas: Sequence[float],
    betas: Sequence[float],
    values: np.ndarray,
    label: str,
    title: str,
    path: Path,
    annotate: bool = True,
    marks: Sequence[tuple[float, float, str]] = (),
    cmap: str = "viridis_r",
) -> None:
    """values[i, j] at (alphas[i], betas[j]); nan cells stay blank. `marks`: (alpha, beta, text) points."""
    fig = _figure(
        max(4.5, 0.9 * len(betas) + 2.5) if annotate else 6.5, max(3.5, 0.7 * len(alphas) + 1.8) if annotate else 5.2
    )
    ax = fig.subplots()
    masked = np.ma.masked_invalid(np.asarray(values, dtype=float))
    if annotate:
        image = ax.imshow(masked, cmap=cmap, origin="lower", aspect="auto")
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        for i in range(len(alphas)):
            for j in range(len(betas)):
                if not np.ma.is_masked(masked[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{masked[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white",
                        bbox=dict(facecolor="black", alpha=0.35, linewidth=0, pad=1),
                    )
    else:
        half_a = (alphas[1] - alphas[0]) / 2 if len(alphas) > 1 else 0.5
        half_b = (betas[1] - betas[0]) / 2 if len(betas) > 1 else 0.5
        image = ax.imshow(
            masked,
            cmap=cmap,
            origin="lower",
            aspect="auto",
            extent=(betas[0] - half_b, betas[-1] + half_b, alphas[0] - half_a, alphas[-1] + half_a),
        )
        for alpha, beta, text in marks:
            ax.plot(
                [beta],
                [alpha],
                marker="x" if text.startswith("best") else "o",
                color="red",
                markerfacecolor="none",
                markersize=9,
            )
            ax.annotate(text, (beta, alpha), xytext=(5, 5), textcoords="offset points", color="red", fontsize=8)
    ax.set(xlabel="β (weight of sim)", ylabel="α (weight of l_rate)", title=title)
    fig.colorbar(image, ax=ax, label=label)
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------- report sections


def runs_summary(runs: Sequence[SearchRun]) -> list[str]:
    header = [
        "Run",
        "Directory",
        "Dataset",
        "n",
        "c",
        "abs(Omega)",
        "α",
        "β",
        "gen × p_size",
        "Best genotype",
        "Best architecture",
        "Best score",
        "Best err_val (%)",
    ]
    rows = []
    for run in runs:
        best = run.best
        config = run.results.get("config") or {}
        p = config.get("population_size", run.search_cfg.get("population_size", "?"))
        n, c = run.num_archs, run.num_cells
        omega = run.results.get("search_space_size") or (search_space_size(n, c) if n else "?")
        rows.append(
            [
                run.label + (" (linked)" if run.linked_only else ""),
                str(run.path),
                run.dataset or "?",
                n or "?",
                c,
                omega,
                _g(run.alpha),
                _g(run.beta),
                f"{len(run.history)} × {p}",
                best.get("genotype_str") or format_genotype(best["genotype"]),
                _architecture(best["genotype"], run.arch_names),
                _num(best.get("score")),
                _pct(best.get("err_val")),
            ]
        )
    return _table(header, rows)


def _match_paper_rows(table: PaperTable, ft: FinetuneRun) -> dict[int, list[PaperRow]]:
    """measured row index -> the paper rows it stands beside."""
    results = ft.results
    matches: dict[int, list[PaperRow]] = {}
    arch_names = ft.arch_names

    def names_of(row) -> list[str]:
        code = row["genotype"]
        if arch_names and all(0 <= int(i) < len(arch_names) for i in code):
            return [_norm(arch_names[int(i)]) for i in code]
        return [_norm(part) for part in str(row.get("architecture", "")).split("+")]

    def best(pool: list[int]) -> list[int]:
        """The fine-tune's own `selected` row, else the lowest validation error; only files written
        before validation errors were recorded fall back to the test error."""
        selected = [k for k in pool if results[k].get("selected")]
        if selected:
            return selected[:1]
        key = "val_error" if all(math.isfinite(_float(results[k].get("val_error"))) for k in pool) else "test_error"
        return [min(pool, key=lambda k: results[k][key])] if pool else []

    for paper in table.rows:
        chosen: list[int] = []
        if paper.kind == "best_original":
            pool = [
                k for k, r in enumerate(results) if not is_searched(r) and _norm(r["label"]).startswith(paper.names)
            ]
            chosen = best([k for k in pool if not results[k].get("selected")])
        elif paper.kind == "original":
            chosen = [k for k, r in enumerate(results) if not is_searched(r) and _norm(r["label"]) in paper.names][:1]
        elif paper.kind == "best_searched":
            if paper.cutout is None or ft.cutout is None or paper.cutout == (ft.cutout > 0):
                chosen = best([k for k, r in enumerate(results) if is_searched(r)])
        elif paper.kind == "hybrid":
            first, rest = paper.names
            chosen = [
                k
                for k, r in enumerate(results)
                if (lambda ns: len(ns) > 1 and ns[0] == first and all(x == rest for x in ns[1:]))(names_of(r))
            ][:1]
        for k in chosen:
            matches.setdefault(k, []).append(paper)
    return matches


def finetune_section(ft: FinetuneRun) -> list[str]:
    """A table in the form of the paper's Tables I-IV: each measured row, and the paper's row beside it."""
    table = paper_table_for(ft.dataset, ft.arch_names)
    settings = [
        f"{ft.epochs} epochs" if ft.epochs is not None else "epochs unknown",
        f"cutout {ft.cutout}" if ft.cutout is not None else "cutout unknown",
    ]
    source = (
        f"search run `{ft.search.path}`"
        if ft.search
        else (f"search run `{ft.search_run_path}` (not found)" if ft.search_run_path else "search run unknown")
    )
    lines = [
        f"### Fine-tune run {ft.label}",
        "",
        f"`{ft.path}`: {source}, dataset {ft.dataset or 'unknown'}, {', '.join(settings)}, all weights trainable.",
        "",
    ]
    if table is None:
        lines += [
            f"No table of the paper matches this run (dataset {ft.dataset or 'unknown'}; the paper reports "
            "CIFAR-100, CIFAR-10 and ImageNet): measured numbers only.",
            "",
        ]
        lines += _table(
            ["Method", "Architecture", "Search score", "Test error measured (%)"],
            [
                [r["label"], r.get("architecture", ""), _num(r.get("search_score")), _pct(r["test_error"])]
                for r in ft.results
            ],
        )
        return lines + [""]
    matches = _match_paper_rows(table, ft)
    two = len(table.columns) > 1
    header = [
        "Method",
        "Architecture",
        "Search score",
        "Test error measured (%)" + (" top1 / top5" if two else ""),
        "Paper row",
        "Paper test error (%)" + (" top1 / top5" if two else ""),
    ]
    rows, used = [], set()
    for k, r in enumerate(ft.results):
        papers = matches.get(k, [])
        used.update(p.method for p in papers)
        measured = _pct(r["test_error"]) + (
            f" / {_pct(r['test_error_top5'])}" if two and r.get("test_error_top5") is not None else ""
        )
        rows.append(
            [
                r["label"] + (" (selected by validation error)" if r.get("selected") else ""),
                r.get("architecture", ""),
                _num(r.get("search_score")),
                measured,
                "; ".join(p.method for p in papers) or "— (no paper row)",
                "; ".join(" / ".join(f"{e:g}" for e in p.errors) for p in papers) or "—",
            ]
        )
    for p in table.rows:
        if p.method not in used:
            rows.append(["(not measured)", "", "", "—", p.method, " / ".join(f"{e:g}" for e in p.errors)])
    lines += [f"Paper: {table.caption}.", ""] + _table(header, rows) + [""]
    notes = [f"{p.method}: {p.note}" for p in table.rows if p.note]
    if any(r.get("validated_on") == "test" for r in ft.results):
        notes.append(
            "this run has no separate validation split (dataset.val_from=test, as the paper's Table III): "
            "the selection by validation error used the test set"
        )
    kb = set(_norm(a) for a in ft.arch_names)
    if table.knowledge_base and kb and kb != set(_norm(a) for a in table.knowledge_base):
        notes.append(
            f"this run's knowledge base ({', '.join(ft.arch_names)}) differs from the paper's "
            f"({', '.join(table.knowledge_base)}): the paper's numbers are a reference, not a replication"
        )
    if notes:
        lines += ["Notes: " + "; ".join(notes) + ".", ""]
    return lines


def fig8_points(ft: FinetuneRun) -> list[dict]:
    """Fine-tuned architectures with a search score: finetune.json's, else the search run's evaluations.csv."""
    evaluations = ft.search.evaluation_by_genotype() if ft.search else {}
    points = []
    for r in ft.results:
        code = tuple(int(i) for i in r["genotype"])
        score = r.get("search_score")
        if score is None and code in evaluations:
            score = evaluations[code]["score"]
        score, error = _float(score), _float(r["test_error"])
        if math.isfinite(score) and score < WORST_SCORE and math.isfinite(error):
            points.append(
                {
                    "label": r["label"],
                    "genotype": code,
                    "score": score,
                    "test_error": error,
                    "architecture": r.get("architecture", ""),
                    "short": f"{r['label']} ({format_genotype(code)})",
                }
            )
    return points


def connections_section(run: SearchRun, out: Path, figures: list[Path]) -> list[str]:
    data = run.ablation or {}
    a = data.get("connection_a", "channel_pool")
    compared = list(data.get("compared") or [data.get("connection_b", "conv1x1")])
    keys = [f"val_acc_{a}", *(f"val_acc_{b}" for b in compared)]
    rows = [r for r in data.get("rows", []) if all(math.isfinite(_float(r.get(k))) for k in keys)]
    lines = [f"### {run.label}", ""]
    if len(rows) < 2:
        return lines + [f"`{run.path / 'ablation_connections.json'}` has {len(rows)} usable rows; Fig. 10 needs 2.", ""]
    xa = [float(r[keys[0]]) for r in rows]
    others = []
    for b, key in zip(compared, keys[1:]):
        xb = [float(r[key]) for r in rows]
        others.append((key, f"val acc {b}", spearman(xa, xb), kendall(xa, xb)))
    path = out / f"fig10_{_file_stem(run.label)}.png"
    plot_connections(rows, keys[0], others, f"val acc {a} (the search's)", f"Connections compared: {run.label}", path)
    figures.append(path)
    summary = "; ".join(
        f"with {b}: Spearman ρ = {_corr(rho)}, Kendall τ = {_corr(tau)}"
        for b, (_, _, rho, tau) in zip(compared, others)
    )
    lines += [
        f"{len(rows)} architectures; rank correlation of validation accuracy with {a} and {summary}. The "
        "paper (Fig. 10) shows parameter-free and 1x1 connections agree on the best and worst architectures.",
        "",
        f"![Fig. 10 {run.label}]({path.name})",
        "",
    ]
    top = sorted(rows, key=lambda r: -float(r[keys[0]]))
    lines += _table(
        ["Genotype", *(f"val acc {name} (%)" for name in (a, *compared)), "Score"],
        [
            [
                r.get("genotype_str") or format_genotype(r.get("genotype", [])),
                *(_pct(r[k], 2) for k in keys),
                _num(r.get("score")),
            ]
            for r in top
        ],
    )
    return lines + [""]


def _best_finetuned(run: SearchRun, finetunes: Sequence[FinetuneRun]) -> float:
    errors = [float(r["test_error"]) for ft in finetunes if ft.search is run for r in ft.searched()]
    return min(errors) if errors else math.nan


def sweep_section(
    runs: Sequence[SearchRun], finetunes: Sequence[FinetuneRun], out: Path, figures: list[Path]
) -> list[str]:
    """Several search runs with different (alpha, beta): a table and a heat map of the best error per cell."""
    runs = [r for r in runs if r.alpha is not None and r.beta is not None and r.best]
    if len({(r.alpha, r.beta) for r in runs}) < 2:
        return []
    finetuned = {id(r): _best_finetuned(r, finetunes) for r in runs}
    use_ft = all(math.isfinite(finetuned[id(r)]) for r in runs)
    metric = (
        "best fine-tuned test error of the searched architectures (%)"
        if use_ft
        else "validation error err_val of the best-score genotype (%)"
    )
    alphas = sorted({r.alpha for r in runs})
    betas = sorted({r.beta for r in runs})
    grid = np.full((len(alphas), len(betas)), np.nan)
    for r in runs:
        value = 100 * (finetuned[id(r)] if use_ft else _float(r.best.get("err_val")))
        i, j = alphas.index(r.alpha), betas.index(r.beta)
        grid[i, j] = value if not math.isfinite(grid[i, j]) else min(grid[i, j], value)
    path = out / "sweep_alpha_beta.png"
    short = "best fine-tuned test error (%)" if use_ft else "err_val of the best genotype (%)"
    plot_heatmap(alphas, betas, grid, short, f"α/β sweep: {short}", path)
    figures.append(path)
    rows = []
    for r in sorted(runs, key=lambda r: (r.alpha, r.beta, r.label)):
        rows.append(
            [
                r.label,
                _g(r.alpha),
                _g(r.beta),
                r.best.get("genotype_str") or format_genotype(r.best["genotype"]),
                _architecture(r.best["genotype"], r.arch_names),
                _num(r.best.get("score")),
                _pct(r.best.get("err_val")),
                _pct(finetuned[id(r)]),
            ]
        )
    best_cell = np.unravel_index(np.nanargmin(grid), grid.shape)
    lines = [
        "## α/β sweep",
        "",
        f"{len(runs)} search runs over α ∈ {{{', '.join(f'{a:g}' for a in alphas)}}}, "
        f"β ∈ {{{', '.join(f'{b:g}' for b in betas)}}}. Heat map: {metric}"
        + (" (several runs in one cell: the lowest)" if len(runs) > len({(r.alpha, r.beta) for r in runs}) else "")
        + f". Lowest at α = {alphas[best_cell[0]]:g}, β = {betas[best_cell[1]]:g}: {grid[best_cell]:.2f} %."
        + ("" if use_ft else " (Not every run has a fine-tune run, so the map uses validation error.)"),
        "",
        f"![α/β sweep]({path.name})",
        "",
    ]
    lines += _table(
        [
            "Run",
            "α",
            "β",
            "Best genotype",
            "Best architecture",
            "Best score",
            "Best err_val (%)",
            "Best fine-tuned test error (%)",
        ],
        rows,
    )
    return lines + [""]


# --------------------------------------------------------------------------- calibration


@dataclass
class Calibration:
    points: list[dict]  # label, genotype, err_val, l_rate, sim, test_error, run
    alphas: np.ndarray
    betas: np.ndarray
    rho: np.ndarray  # Spearman over the grid, [alpha, beta]
    best_alpha: float
    best_beta: float
    best_rho: float
    best_kendall: float
    ties: int  # grid points reaching best_rho
    tied_alpha: tuple[float, float]  # the range of alpha over those points
    tied_beta: tuple[float, float]
    own: list[tuple[str, float, float, float]]  # (run label, alpha, beta, rho) at each run's own weights


def calibration_points(finetunes: Sequence[FinetuneRun]) -> list[dict]:
    """Fine-tuned architectures matched by genotype to their search run's evaluations (search terms known)."""
    merged: dict[tuple, dict] = {}
    for ft in finetunes:
        if ft.search is None:
            continue
        evaluations = ft.search.evaluation_by_genotype()
        for r in ft.results:
            code = tuple(int(i) for i in r["genotype"])
            e = evaluations.get(code)
            error = _float(r["test_error"])
            if (
                e is None
                or not math.isfinite(error)
                or not all(math.isfinite(e[k]) for k in ("err_val", "l_rate", "sim"))
            ):
                continue
            key = (id(ft.search), code)
            point = merged.setdefault(
                key,
                {
                    "label": r["label"],
                    "genotype": code,
                    "err_val": e["err_val"],
                    "l_rate": e["l_rate"],
                    "sim": e["sim"],
                    "errors": [],
                    "run": ft.search,
                },
            )
            point["errors"].append(error)
    points = []
    for point in merged.values():
        point["test_error"] = float(np.mean(point.pop("errors")))  # several fine-tunes of one genotype: their mean
        points.append(point)
    return points


def calibrate(points: Sequence[dict], maximum: float = 50.0, step: float = 1.0) -> Calibration:
    """Grid search of Eq. 4's weights: alpha, beta in {0, step, ..., maximum} maximising Spearman's rho
    between score = err_val - alpha * l_rate + beta * sim and the fine-tuned test error (both lower is
    better, so a useful score correlates positively). Ties at the best rho: the highest Kendall tau,
    then the point nearest the centre of the tied points, then grid order."""
    if len(points) < MIN_CALIBRATION_POINTS:
        raise ValueError(f"calibration needs at least {MIN_CALIBRATION_POINTS} architectures, got {len(points)}")
    grid = np.round(np.arange(0.0, maximum + step / 2, step), 10)
    err = np.array([p["err_val"] for p in points], dtype=float)
    l_rate = np.array([p["l_rate"] for p in points], dtype=float)
    sim = np.array([p["sim"] for p in points], dtype=float)
    test = np.array([p["test_error"] for p in points], dtype=float)
    rho = np.full((grid.size, grid.size), np.nan)
    for i, alpha in enumerate(grid):
        # Eq. 4 (modulenet.score.search_score), vectorised over beta and the architectures
        scores = err[None, :] - alpha * l_rate[None, :] + grid[:, None] * sim[None, :]
        rho[i] = spearman_rows(scores, test)
    if not np.isfinite(rho).any():
        best_rho, candidates = math.nan, [(0, 0)]
    else:
        best_rho = float(np.nanmax(rho))
        candidates = [tuple(ix) for ix in np.argwhere(rho >= best_rho - 1e-12)]

    def scores_at(alpha, beta):
        return [search_score(p["err_val"], p["l_rate"], p["sim"], alpha, beta) for p in points]

    taus = {ix: kendall(scores_at(grid[ix[0]], grid[ix[1]]), test) for ix in candidates}
    top_tau = max((t for t in taus.values() if math.isfinite(t)), default=math.nan)
    finalists = [ix for ix in candidates if not math.isfinite(top_tau) or taus[ix] >= top_tau - 1e-12]
    centre = np.mean([[grid[i], grid[j]] for i, j in finalists], axis=0)
    i, j = min(finalists, key=lambda ix: (float(np.hypot(grid[ix[0]] - centre[0], grid[ix[1]] - centre[1])), ix))
    alpha, beta = float(grid[i]), float(grid[j])
    best_rho = spearman(scores_at(alpha, beta), test)  # recomputed with search_score itself
    own, seen = [], set()
    for p in points:
        run = p["run"]
        if run.alpha is None or run.beta is None or id(run) in seen:
            continue
        seen.add(id(run))
        own.append((run.label, run.alpha, run.beta, spearman(scores_at(run.alpha, run.beta), test)))
    tied_a = [float(grid[ix[0]]) for ix in candidates]
    tied_b = [float(grid[ix[1]]) for ix in candidates]
    return Calibration(
        list(points),
        grid,
        grid,
        rho,
        alpha,
        beta,
        best_rho,
        _float(taus.get((i, j))),
        len(candidates),
        (min(tied_a), max(tied_a)),
        (min(tied_b), max(tied_b)),
        own,
    )


def calibration_section(
    finetunes: Sequence[FinetuneRun], maximum: float, step: float, out: Path, figures: list[Path]
) -> tuple[list[str], Calibration | None]:
    points = calibration_points(finetunes)
    lines = [
        "## Calibration of α, β (beyond the paper)",
        "",
        'The paper sets α, β "through experiments" (25/25 for CIFAR-100, 10/30 for the NAS knowledge base). '
        f"Here: a grid search over α, β ∈ {{0, {step:g}, ..., {maximum:g}}} for the highest Spearman ρ between "
        "score = err_val − α·l_rate + β·sim (Eq. 4, from evaluations.csv) and the fine-tuned test error of the "
        "same architectures (matched by genotype to the fine-tune run's search run). Ties: highest Kendall τ, "
        "then the centre of the tied region.",
        "",
    ]
    if len(points) < MIN_CALIBRATION_POINTS:
        return lines + [
            f"Calibration needs at least {MIN_CALIBRATION_POINTS} fine-tuned architectures whose search "
            f"terms are known; the given runs have {len(points)}. Fine-tune more of them "
            "(`modulenet-finetune finetune.top_k=...`) and run the report again.",
            "",
        ], None
    result = calibrate(points, maximum, step)
    marks = [(result.best_alpha, result.best_beta, "best")]
    marks += [(a, b, label) for label, a, b, _ in result.own if 0 <= a <= maximum and 0 <= b <= maximum]
    path = out / "calibration_rho.png"
    plot_heatmap(
        list(result.alphas),
        list(result.betas),
        result.rho,
        "Spearman ρ(score, test error)",
        f"Calibration over {len(points)} architectures",
        path,
        annotate=False,
        marks=marks,
        cmap="viridis",
    )
    figures.append(path)
    lines += [
        f"**Best: α = {result.best_alpha:g}, β = {result.best_beta:g}, Spearman ρ = {_corr(result.best_rho)}, "
        f"Kendall τ = {_corr(result.best_kendall)}** over {len(points)} architectures "
        f"({result.ties} of {result.rho.size} grid points reach this ρ"
        + (
            f", α ∈ [{result.tied_alpha[0]:g}, {result.tied_alpha[1]:g}], "
            f"β ∈ [{result.tied_beta[0]:g}, {result.tied_beta[1]:g}]"
            if result.ties > 1
            else ""
        )
        + ").",
        "",
    ]
    lines += _table(
        ["Weights", "α", "β", "Spearman ρ"],
        [["calibrated", f"{result.best_alpha:g}", f"{result.best_beta:g}", _corr(result.best_rho)]]
        + [[f"run {label} (its own)", f"{a:g}", f"{b:g}", _corr(r)] for label, a, b, r in result.own],
    )
    lines += ["", f"![calibration]({path.name})", "", "Architectures used:", ""]
    lines += _table(
        ["Run", "Label", "Genotype", "err_val (%)", "l_rate", "sim", "Test error (%)", "Score at calibrated α, β"],
        [
            [
                p["run"].label,
                p["label"],
                format_genotype(p["genotype"]),
                _pct(p["err_val"]),
                _num(p["l_rate"]),
                _num(p["sim"], 2),
                _pct(p["test_error"]),
                _num(search_score(p["err_val"], p["l_rate"], p["sim"], result.best_alpha, result.best_beta)),
            ]
            for p in result.points
        ],
    )
    return lines + [""], result


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    path: Path
    figures: list[Path]
    calibration: Calibration | None
    runs: Runs


def write_report(
    run_paths: Sequence[str | Path],
    out_dir: str | Path,
    calibrate_weights: bool = False,
    title: str = "ModuleNet report",
    calibration_max: float = 50.0,
    calibration_step: float = 1.0,
) -> Report:
    """Read the runs, write `report.md` and its figures into `out_dir`; returns what was written."""
    if not calibration_step > 0 or not calibration_max >= 0:
        raise ModuleNetError(
            f"calibration_step={calibration_step} must be > 0 and calibration_max={calibration_max} >= 0"
        )
    runs = load_runs(run_paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    search = runs.search
    lines = [
        f"# {title}",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `modulenet-report` from "
        f"{len(search)} search run(s), {len(runs.finetune)} fine-tune run(s)"
        + (f", {len(runs.ablation_only)} connection ablation(s)" if runs.ablation_only else "")
        + ".",
        "Test errors and err_val in %, lower is better; scores are Eq. 4 (lower is better).",
        "",
    ]

    if search:
        lines += ["## Search runs", ""] + runs_summary(search) + [""]
        curves, survival = out / "score_curves.png", out / "new_survival.png"
        plot_score_curves(search, curves)
        plot_new_survival(search, survival)
        figures += [curves, survival]
        lines += [
            "## Search curves",
            "",
            "Population score (min, mean) and best score so far per generation:",
            "",
            f"![score curves]({curves.name})",
            "",
            "New survival (Fig. 9): genotypes of generation i's population that were not in generation i−1's. "
            "The paper sees it fall as the population settles.",
            "",
            f"![new survival]({survival.name})",
            "",
        ]
        survival_rows = []
        for run in search:
            points = run.new_survival()
            survival_rows.append([run.label, ", ".join(str(s) for _, s in points)])
        lines += _table(["Run", "New survival per generation"], survival_rows) + [""]

        lines += ["## Searched architectures (Figs. 5-7)", ""]
        for run in search:
            best = run.best
            path = out / f"architecture_{_file_stem(run.label)}.png"
            architecture = _architecture(best["genotype"], run.arch_names)
            plot_architecture(
                best["genotype"],
                run.arch_names,
                f"{run.label}: best genotype {format_genotype(best['genotype'])}, "
                f"score {_num(best.get('score'))}, err_val {_pct(best.get('err_val'))} %",
                path,
            )
            figures.append(path)
            lines += [
                f"**{run.label}**: {format_genotype(best['genotype'])} = {architecture}",
                "",
                f"![architecture {run.label}]({path.name})",
                "",
            ]

    lines += ["## Fine-tuned test error (Tables I-IV)", ""]
    if runs.finetune:
        for ft in runs.finetune:
            lines += finetune_section(ft)
    else:
        lines += ["No fine-tune run given (`modulenet-finetune search_run=<search run>` writes one).", ""]

    lines += ["## Search score vs fine-tuned test error (Fig. 8)", ""]
    fig8_any = False
    for ft in runs.finetune:
        points = fig8_points(ft)
        if len(points) < 2:
            continue
        fig8_any = True
        scores, errors = [p["score"] for p in points], [p["test_error"] for p in points]
        rho, tau = spearman(scores, errors), kendall(scores, errors)
        path = out / f"fig8_{_file_stem(ft.label)}.png"
        plot_score_vs_error(points, rho, tau, f"Search score vs test error: {ft.label}", path)
        figures.append(path)
        lines += [
            f"### {ft.label}",
            "",
            f"{len(points)} fine-tuned architectures with a search score: Spearman ρ = {_corr(rho)}, "
            f"Kendall τ = {_corr(tau)} (positive: a lower score goes with a lower test error, as in the paper).",
            "",
            f"![Fig. 8 {ft.label}]({path.name})",
            "",
        ]
        lines += _table(
            ["Label", "Genotype", "Search score", "Test error (%)"],
            [
                [p["label"], format_genotype(p["genotype"]), _num(p["score"]), _pct(p["test_error"])]
                for p in sorted(points, key=lambda p: -p["score"])
            ],
        ) + [""]
    if not fig8_any:
        lines += [
            "Needs a fine-tune run with at least 2 architectures that have a search score (e.g. `finetune.top_k=10`).",
            "",
        ]

    lines += ["## Parameter-free vs 1×1 connections (Fig. 10)", ""]
    ablations = [r for r in [*search, *runs.ablation_only] if r.ablation]
    for run in ablations:
        lines += connections_section(run, out, figures)
    if not ablations:
        lines += ["No run has an `ablation_connections.json`.", ""]

    lines += sweep_section(search, runs.finetune, out, figures)

    calibration = None
    if calibrate_weights:
        section, calibration = calibration_section(runs.finetune, calibration_max, calibration_step, out, figures)
        lines += section

    lines += ["## Inputs", ""] + [f"- `{r.path}` (search{', linked' if r.linked_only else ''})" for r in search]
    lines += [f"- `{r.path}` (fine-tune)" for r in runs.finetune]
    lines += [f"- `{r.path}` (connection ablation)" for r in runs.ablation_only] + [""]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines))
    return Report(path, figures, calibration, runs)


# --------------------------------------------------------------------------- W&B and the Hydra job


def log_report_to_wandb(report: Report, logger_cfg, out_dir: Path) -> str | None:
    """The figures (and calibration result) in a W&B run of job_type "report". `logger.mode=auto` logs only
    when one of the given runs was online and W&B has credentials now; offline logs into `out_dir`.
    Returns the mode used, or None when nothing was logged. Never writes keys anywhere."""
    from modulenet.tracking import resolve_wandb_mode

    if logger_cfg is None or logger_cfg.get("name", "wandb") != "wandb":
        return None
    infos = [r.wandb for r in [*report.runs.search, *report.runs.finetune] if r.wandb]
    online = [info for info in infos if info.get("mode") == "online"]
    mode = resolve_wandb_mode(logger_cfg.get("mode", "auto"))
    if logger_cfg.get("mode", "auto") == "auto" and (not online or mode != "online"):
        return None
    if mode not in ("online", "offline"):
        return None
    ref = (online or infos or [{}])[0]
    try:
        import wandb

        run = wandb.init(
            project=logger_cfg.get("project") or ref.get("project") or "modulenet",
            entity=logger_cfg.get("entity") or ref.get("entity"),
            group=logger_cfg.get("group") or ref.get("group"),
            job_type="report",
            tags=list(logger_cfg.get("tags") or []),
            dir=str(out_dir),
            mode=mode,
            config={"runs": [str(r.path) for r in report.runs.search + report.runs.finetune]},
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False),
        )
        run.log({f"report/{p.stem}": wandb.Image(str(p)) for p in report.figures})
        if report.calibration is not None:
            c = report.calibration
            run.summary.update(
                {
                    "calibration/alpha": c.best_alpha,
                    "calibration/beta": c.best_beta,
                    "calibration/spearman": c.best_rho,
                    "calibration/kendall": c.best_kendall,
                }
            )
        run.finish()
    except Exception as err:  # the report is written; tracking is a bonus
        log.warning(
            "W&B logging of the report failed: %s", str(err).splitlines()[0] if str(err) else type(err).__name__
        )
        return None
    return mode


def report_job(cfg, run_dir: Path) -> Path:
    """modulenet-report: `cfg` is a ReportAppConf; returns the path of report.md."""
    from omegaconf import OmegaConf

    out = Path(cfg.output) if cfg.get("output") else Path(run_dir)
    runs = [cfg.runs] if isinstance(cfg.runs, str) else list(cfg.runs)  # runs=DIR as well as runs=[DIR,...]
    report = write_report(
        runs, out, bool(cfg.calibrate), cfg.title, float(cfg.calibration_max), float(cfg.calibration_step)
    )
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") is not None else None
    mode = log_report_to_wandb(report, logger_cfg, out)
    if mode:
        log.info("report figures logged to W&B (%s)", mode)
    log.info("report: %s (%d figures)", report.path, len(report.figures))
    return report.path
