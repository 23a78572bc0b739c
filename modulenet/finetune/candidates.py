"""Which architectures the evaluation stage fine-tunes (Sec. IV): the final population's, or
those the options below name, then the originals for comparison."""

from __future__ import annotations

from modulenet.finetune.settings import FinetuneSettings
from modulenet.genotype import is_original
from modulenet.knowledge.base import KnowledgeBase
from modulenet.search.outputs import non_dominated, search_path, spread_over_ranking


def select_candidates(
    results: dict, kb: KnowledgeBase, settings: FinetuneSettings, scores: dict[tuple, float] | None = None
) -> list[tuple[str, tuple]]:
    """Searched genotypes ranked by search score ("ModuleNet #1" best), then the originals [i] * c.

    `top_k`: the k best distinct genotypes of the final population. `every_generation`: the
    distinct genotypes of all generations' populations (`results["populations"]`, scores from
    `scores`); `evaluated`: every genotype the search evaluated (`scores`, from evaluations.csv),
    survivor or not; `front`: the final population's genotypes that no other one dominates in the
    search's objectives (a multi-objective search's accuracy/cost front; ours). Beyond
    `max_candidates`, evenly spaced ranks, so the picks span good to bad (`front`: the best by score)."""
    scores = dict(scores or {})
    scores.update({tuple(row["genotype"]): row["score"] for row in results["population"]})
    if settings.candidates in ("top_k", "population"):
        finals = dict.fromkeys(tuple(row["genotype"]) for row in results["population"])
        limit = settings.top_k if settings.candidates == "top_k" else settings.max_candidates
        ranked = sorted(finals, key=lambda code: scores[code])[:limit]
    elif settings.candidates == "front":  # an original on the front is fine-tuned once, under its own name
        front = [code for code in final_front(results) if not (settings.include_originals and is_original(code))]
        ranked = sorted(front, key=lambda code: scores[code])[: settings.max_candidates]
    elif settings.candidates == "every_generation":
        ranked = search_path(results, scores, settings.max_candidates)
    else:
        ranked = spread_over_ranking(sorted(scores, key=lambda code: scores[code]), settings.max_candidates)
    chosen = [(f"ModuleNet #{rank}", code) for rank, code in enumerate(ranked, start=1)]
    if settings.include_originals:
        chosen += [(name, kb.original_genotype(i)) for i, name in enumerate(kb.arch_names)]
    return chosen


def final_front(results: dict) -> list[tuple[int, ...]]:
    """The final population's distinct genotypes that no other one dominates in the objectives the
    search minimised (`results["config"]["objectives"]`; failed individuals left out)."""
    objectives = results["config"]["objectives"]
    rows = {tuple(r["genotype"]): r for r in results["population"] if r.get("status", "ok") == "ok"}
    codes = list(rows)
    points = [tuple(float(rows[code][name]) for name in objectives) for code in codes]
    return [codes[i] for i in non_dominated(points)]
