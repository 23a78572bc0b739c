"""The evaluation stage (Sec. IV): the searched candidates and the originals fine-tuned with
every weight trainable, the best by validation error selected, its test error reported.

- `settings`: the finetune group's recipe (FinetuneRecipe) and FinetuneSettings.
- `stage`: candidates, fine-tuning, selection, finetune.json / finetune.md.
"""
