"""The application on top of the stages: Hydra entry points (`cli`), the jobs they run (`jobs`),
the structured-config schemas (`config`), the objects each config group builds (`builders`),
and the connection ablation of Sec. V-C (`ablation`)."""
