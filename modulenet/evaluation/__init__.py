"""Evaluating individuals (Sec. III-E, Algorithm 1 lines 11 and 16): the trunk frozen, only the
`input-4096-4096-classes` classifier trained, err_val / l_rate / sim / score measured.

- `settings`: what decides a result (ClassifierSettings, EvaluationSettings: the memo's key).
- `lit_module`: the classifier, and one individual trained by Lightning.
- `stacked`: ours, speed only: cached trunk features, shared prefixes, stacked classifiers.
- `evaluator`: the Evaluator (memo, grouping into tasks, the two training paths).
- `dispatch`: ours, the same tasks sent to one worker per GPU (or CPU workers) or to Ray actors.
"""
