"""Evaluating individuals (Sec. III-E, Algorithm 1 lines 11 and 16): the trunk frozen, only the
`input-4096-4096-classes` classifier trained, err_val / l_rate / sim / score measured.

- `settings`: what decides a result (ClassifierSettings, EvaluationSettings: the memo's key).
- `evaluator`: the Evaluator, the search's `evaluate`: parses, asks the memo, plans, dispatches.
- `memo`: finished evaluations, kept across kills.  `planner`: a generation cut into tasks.
- `candidate`: one individual assembled (trunk, classifier width, FLOPs), where it trains.
- `training`: a task trained (Lightning, or stacked), the handler every dispatcher runs.
- `lit_module`: the classifier, and one individual in Lightning.
- `stacked`: ours, speed only: cached trunk features, shared prefixes, stacked classifiers.
- `naswot`: ours, a training-free ranking.
"""
