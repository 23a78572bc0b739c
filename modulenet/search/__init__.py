"""The search (Sec. III-C, III-E, Algorithm 1): NSGA-II over genotypes, ranked by the score of
Eq. (4)-(8). Plain Python and DEAP: the search knows genotypes and fitness only, never torch;
the evaluation stage below it is handed in as a function.

- `toolbox`: the search group's settings (SearchConfig) and the DEAP toolbox of Algorithm 1.
- `nsga2`: the generational loop (lines 11-19), checkpointed each generation.
- `individual`: the DEAP individual (one to three minimised objectives).
- `score`: Eq. (4)-(8) and new survival (Sec. V-B).
- `records`: what the search knows of an evaluated individual (Evaluation).
- `state`: the checkpoint a stopped search resumes from; `outputs`: results.json, evaluations.csv, curves.
"""

from modulenet.search.nsga2 import SearchCallback, SearchProgress, SearchResult, SearchSpace, run_search
from modulenet.search.records import Evaluation
from modulenet.search.score import loss_rate, new_survival, search_score, similarity
from modulenet.search.toolbox import SearchConfig

__all__ = [
    "Evaluation",
    "SearchCallback",
    "SearchConfig",
    "SearchProgress",
    "SearchResult",
    "SearchSpace",
    "loss_rate",
    "new_survival",
    "run_search",
    "search_score",
    "similarity",
]
