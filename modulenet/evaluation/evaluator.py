"""Evaluating one individual (Sec. III-E, Sec. IV; Algorithm 1 lines 11 and 16).

The assembled trunk is frozen, so only the classifier is trained, with cross-entropy, for
`epochs` (20 in the paper): by a Lightning `Trainer` one individual at a time, or as stacked
classifiers in a plain loop (stacked.py). From that training: err_val = 1 - acc_val
(Eq. 5), l_rate from the first and last epoch's mean training loss (Eq. 6), sim from the
genotype (Eq. 7-8), and score (Eq. 4).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from modulenet.errors import first_line
from modulenet.evaluation.lit_module import Classifier, IndividualModule, classifier_input_size, pool_features
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.evaluation.stacked import HeadShape, StackedIndividuals, group_by_width, prefix_shared_features
from modulenet.genotype import Genotype, format_genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.rng import seeded
from modulenet.rundir import append_line
from modulenet.runtime.precision import AUTO, choose_precision, is_bf16
from modulenet.runtime.trainer import accelerator_device, make_trainer, quiet_lightning, use_float32_matmul_precision
from modulenet.search.records import Evaluation
from modulenet.search.score import loss_rate, search_score, similarity

log = logging.getLogger(__name__)


def measured_head(settings: EvaluationSettings, num_classes: int) -> HeadShape | None:
    """What `trainer.precision=auto` times: the classifiers as an evaluator with `settings` trains
    them (the input width varies by genotype: the first hidden width stands in for it). None where
    the frozen trunk runs in every training step, which makes it a whole network's precision."""
    s = settings
    if not s.features_cached:
        return None
    copies = min(8, max(1, s.stack_individuals))  # the timing's cost stays bounded
    return HeadShape(s.hidden[0] if s.hidden else 64, tuple(s.hidden), num_classes, copies, s.batch_size)


class EvaluationMemo:
    """Append-only JSON-lines file of finished evaluations: no genotype is trained twice, and a
    killed run keeps every evaluation that finished (a torn last line is ignored when read and set
    aside before the next append)."""

    def __init__(self, path: str | os.PathLike, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._done: dict[Genotype, Evaluation] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a write cut short by a kill
                if row.get("fingerprint") == fingerprint:
                    evaluation = Evaluation.from_dict(row["evaluation"])
                    self._done[tuple(evaluation.genotype)] = evaluation

    def get(self, genotype: Sequence[int]) -> Evaluation | None:
        return self._done.get(tuple(genotype))

    def put(self, evaluation: Evaluation) -> None:
        self._done[tuple(evaluation.genotype)] = evaluation
        append_line(self.path, json.dumps({"fingerprint": self.fingerprint, "evaluation": evaluation.to_dict()}))

    def __len__(self) -> int:
        return len(self._done)


@torch.no_grad()
def trunk_features(trunk: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """The frozen trunk's output for every image, computed once (kept on `device`)."""
    chunks = [trunk(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)


def count_flops(trunk: torch.nn.Module, image_shape: Sequence[int]) -> int:
    """Forward FLOPs of the trunk for one image (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(trunk.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        trunk(torch.zeros(1, *image_shape, device=device))
    return int(counter.get_total_flops())


class Evaluator:
    """Evaluates genotypes on one knowledge base and dataset, in this process (`evaluator=local`).

    Call it with a list of genotypes (DEAP's map pattern over a generation); it returns one
    `Evaluation` each, from the memo where one exists.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        num_classes: int,
        settings: EvaluationSettings,
        memo_path: str | os.PathLike | None = None,
        context: dict | None = None,
        progress: bool = True,
    ):
        self.kb = kb
        self.x_train, self.y_train, self.x_val, self.y_val = data
        self.num_classes = num_classes
        self.settings = settings
        self.progress = progress
        self.device = accelerator_device(settings.accelerator)
        use_float32_matmul_precision(self.device, settings.float32_matmul_precision)
        if self.device.type == "cuda":  # faster host-to-device copies of image batches
            self.x_train, self.x_val = self.x_train.pin_memory(), self.x_val.pin_memory()
        self.precision = choose_precision(settings.precision, self.device, measured_head(settings, num_classes))
        if settings.precision == AUTO:
            log.info("trainer.precision=auto chose %s: %s", self.precision.precision, self.precision.reason)
            self.settings = settings = replace(settings, precision=self.precision.precision)
        self.memo = EvaluationMemo(memo_path, settings.fingerprint(context)) if memo_path else None

    @property
    def batched(self) -> bool:
        """Whether a generation goes through `batched_evaluation` (cached features of a frozen,
        parameter-free trunk; a conv1x1 link trains, so it takes the plain way)."""
        s = self.settings
        return s.features_cached and (s.stack_individuals > 1 or s.share_prefixes)

    def __call__(self, genotypes: Sequence[Sequence[int]]) -> list[Evaluation]:
        """Every genotype's evaluation, in order: from the memo where one exists, else trained
        (by `_evaluate_pending`: here, or on workers) and written to the memo, here only."""
        codes = [self.kb.parse_genotype(g) for g in genotypes]
        bar = tqdm(total=len(codes), desc="individuals", unit="ind", leave=False, disable=not self.progress)
        done: dict[Genotype, Evaluation] = {}
        for code in codes:
            if self.memo is not None and (memo := self.memo.get(code)) is not None:
                done[code] = memo
        pending = list(dict.fromkeys(c for c in codes if c not in done))
        bar.update(len(codes) - len(pending))
        try:
            for evaluation in self._evaluate_pending(pending):
                if self.memo is not None:
                    self.memo.put(evaluation)
                done[evaluation.genotype] = evaluation
                bar.set_postfix_str(format_genotype(evaluation.genotype))
                bar.update(1)
        finally:
            bar.close()
        return [done[code] for code in codes]

    def tasks(self, pending: list[Genotype], workers: int = 1) -> list[list[Genotype]]:
        """The units of work: groups trained together (shared prefixes, stacked classifiers) where
        evaluation is batched, else single individuals. With several workers the largest groups are
        halved until each worker has one, so no worker idles while another trains a whole stack."""
        tasks = self._groups(pending) if self.batched else [[code] for code in pending]
        while len(tasks) < workers and (largest := max(tasks, key=len, default=[])) and len(largest) > 1:
            i, half = tasks.index(largest), (len(largest) + 1) // 2
            tasks[i : i + 1] = [largest[:half], largest[half:]]  # contiguous halves keep shared prefixes
        return tasks

    def _evaluate_pending(self, pending: list[Genotype]) -> Iterator[Evaluation]:
        """Yields an `Evaluation` for every genotype in `pending`, task by task, in this process;
        `evaluation/dispatch.py` overrides it to send the tasks to workers."""
        for task in self.tasks(pending):
            yield from self.evaluate_task(task)

    def evaluate_task(self, task: list[Genotype]) -> list[Evaluation]:
        """One task (see `tasks`), trained here; the memo is the caller's."""
        # Frozen trunks share the knowledge base's modules, so all of them go to this device at
        # once: a trunk moved alone would leave its modules' neighbours on another device.
        self.kb.to(self.device)
        if self.batched:
            return self._evaluate_group(task)
        return [self._evaluate_one(code) for code in task]

    def close(self) -> None:
        """Release workers (none here)."""

    def evaluate(self, genotype: Sequence[int]) -> Evaluation:
        """One individual, memoised."""
        code = self.kb.parse_genotype(genotype)
        if self.memo is not None and (done := self.memo.get(code)) is not None:
            return done
        self.kb.to(self.device)
        evaluation = self._evaluate_one(code)
        if self.memo is not None:
            self.memo.put(evaluation)
        return evaluation

    def _evaluate_one(self, code: Genotype) -> Evaluation:
        """One individual; a failure is retried once at half the batch size, then recorded as
        failed with the worst score so the search goes on."""
        batch_size, feature_batch_size, error = self.settings.batch_size, self.settings.feature_batch_size, ""
        for _attempt in range(2):
            try:
                return self._train(code, batch_size, feature_batch_size)
            except (RuntimeError, MemoryError) as err:  # out of memory and friends
                error = first_line(err)
                log.warning("individual %s failed at batch size %d: %s", format_genotype(code), batch_size, error)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                batch_size, feature_batch_size = max(1, batch_size // 2), max(1, feature_batch_size // 2)
        return Evaluation.failed(code, error)

    def _adam(self, fused: bool) -> Callable[..., torch.optim.Optimizer]:
        """The classifier's optimizer: Adam (lr 1e-3, batch 256 by default) is this project's choice,
        the paper names no optimiser for the search stage (Sec. IV). `fused`: one kernel per step instead of
        torch's default per-tensor loop, which on CPU re-reads the stacked weights about six times
        and took a third of each stacked step (measured: 1.0 s vs 0.13 s for 8 4096-4096 heads).
        Same update up to float rounding; the plain way keeps torch's default."""
        s = self.settings
        return lambda params, capturable=False: torch.optim.Adam(
            params, lr=s.lr, weight_decay=s.weight_decay, fused=True if fused else None, capturable=capturable
        )

    def _trunk(self, code: Genotype):
        """The frozen trunk of `code` with this evaluation's connection and resolution rule."""
        return self.kb.assemble(code, connection=self.settings.connection, resolution=self.settings.resolution)

    def _groups(self, codes: list[Genotype]) -> list[list[Genotype]]:
        """Lexicographic order (neighbours share prefixes), cut into stackable groups."""
        s = self.settings
        codes = sorted(codes)
        widths, sizes = {}, {}
        itemsize = 2 if is_bf16(s.precision) else 4
        for code in codes:
            out = self.kb.output_spec(code)
            size = self._trunk(code).output_size(tuple(self.x_train.shape[-2:]))
            widths[code] = classifier_input_size(out.out_channels, tuple(size), s.pool)
            sizes[code] = widths[code] * (len(self.x_train) + len(self.x_val)) * itemsize
        return group_by_width(codes, widths, max(1, s.stack_individuals), sizes, int(s.feature_memory_gb * 2**30))

    def _evaluate_group(self, group: list[Genotype]) -> list[Evaluation]:
        """A group trained together; if that fails (out of memory, say), each individual alone
        (with the retry at half batch size of `_evaluate_one`)."""
        try:
            return self._train_group(group)
        except (RuntimeError, MemoryError) as err:
            log.warning(
                "group %s failed together (%s); evaluating one by one",
                " ".join(format_genotype(c) for c in group),
                first_line(err),
            )
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return [self._evaluate_one(code) for code in group]

    def _train_group(self, group: list[Genotype]) -> list[Evaluation]:
        s = self.settings
        start = time.perf_counter()
        channels_last = self.device.type == "cuda"
        trunks = {code: self._trunk(code).to(self.device) for code in group}
        if channels_last:
            for trunk in trunks.values():
                trunk.to(memory_format=torch.channels_last)
        x_train, x_val = self._group_features(trunks, group, channels_last)
        with seeded(s.seed, self.device):
            template = Classifier(x_train.shape[-1], self.num_classes, s.hidden, s.dropout)  # each individual's init
            model = StackedIndividuals(
                x_train,
                self.y_train.to(self.device),
                x_val,
                self.y_val.to(self.device),
                template,
                optimizer=self._adam(fused=self.device.type in ("cpu", "cuda")),
                precision=s.precision,
            )
            model.fit(s.epochs, s.batch_size, torch.Generator().manual_seed(s.seed), graph=s.graph_step)
            model.validate(s.batch_size)
        seconds = (time.perf_counter() - start) / len(group)
        classifier_params = model.classifier.num_params()
        return [
            self._record(code, trunks[code], model.val_accuracies[g], model.epoch_losses[g], classifier_params, seconds)
            for g, code in enumerate(group)
        ]

    def _group_features(
        self, trunks: dict, group: list[Genotype], channels_last: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The group's pooled trunk features, stacked (individual, image, feature): computed once
        per shared module prefix when `share_prefixes`, each trunk on its own otherwise."""
        s = self.settings
        feature_dtype = torch.bfloat16 if is_bf16(s.precision) else torch.float32
        # bf16 convolutions pay off on GPUs only: CPUs without AMX run them slower than fp32 (about
        # 3x here), while their bf16 matrix products (the classifier) are about 2.3x faster.
        trunk_bf16 = feature_dtype == torch.bfloat16 and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=trunk_bf16):
            if s.share_prefixes:
                train, _ = prefix_shared_features(
                    trunks, self.x_train, s.feature_batch_size, self.device, s.pool, channels_last, feature_dtype
                )
                val, _ = prefix_shared_features(
                    trunks, self.x_val, s.feature_batch_size, self.device, s.pool, channels_last, feature_dtype
                )
            else:
                train, val = (
                    {
                        code: pool_features(
                            trunk_features(trunks[code], x, s.feature_batch_size, self.device), s.pool
                        ).to(feature_dtype)
                        for code in group
                    }
                    for x in (self.x_train, self.x_val)
                )
        return torch.stack([train.pop(code) for code in group]), torch.stack([val.pop(code) for code in group])

    def _record(
        self, code: Genotype, trunk, val_accuracy: float, epoch_losses, classifier_params: int, seconds: float
    ) -> Evaluation:
        """An individual's Evaluation: Eq. 4's terms (err_val, l_rate of Eq. 5, sim of Eq. 8), its size and cost."""
        s = self.settings
        err_val, l_rate, sim = 1.0 - val_accuracy, loss_rate(epoch_losses), similarity(code)
        return Evaluation(
            genotype=code,
            score=search_score(err_val, l_rate, sim, s.alpha, s.beta),
            err_val=err_val,
            l_rate=l_rate,
            sim=sim,
            epoch_losses=list(epoch_losses),
            params=int(sum(p.numel() for p in trunk.parameters()) + classifier_params),
            flops=count_flops(trunk, self.x_train.shape[1:]),
            seconds=seconds,
        )

    def _train(self, code: Genotype, batch_size: int, feature_batch_size: int) -> Evaluation:
        s = self.settings
        start = time.perf_counter()
        trunk = self._trunk(code).to(self.device)
        out = self.kb.output_spec(code)
        in_features = classifier_input_size(out.out_channels, trunk.output_size(tuple(self.x_train.shape[-2:])), s.pool)
        if s.features_cached:
            x_train = trunk_features(trunk, self.x_train, feature_batch_size, self.device)
            x_val = trunk_features(trunk, self.x_val, feature_batch_size, self.device)
            model_trunk = None
        else:  # the plain way: the frozen trunk runs in every step (and a conv1x1 link trains)
            x_train, x_val, model_trunk = self.x_train, self.x_val, trunk
        with seeded(s.seed, self.device), quiet_lightning():
            model = IndividualModule(
                model_trunk,
                in_features,
                self.num_classes,
                s.hidden,
                s.pool,
                s.dropout,
                optimizer=self._adam(fused=False),
            )
            shuffle = torch.Generator().manual_seed(s.seed)
            train_loader = DataLoader(
                TensorDataset(x_train, self.y_train.to(x_train.device)),
                batch_size=batch_size,
                shuffle=True,
                generator=shuffle,
            )
            val_loader = DataLoader(TensorDataset(x_val, self.y_val.to(x_val.device)), batch_size=batch_size)
            trainer = make_trainer(s.epochs, s.accelerator, s.precision)
            trainer.fit(model, train_loader)
            trainer.validate(model, val_loader, verbose=False)
        classifier_params = sum(p.numel() for p in model.classifier.parameters())
        seconds = time.perf_counter() - start
        return self._record(code, trunk, model.val_accuracy, model.epoch_losses, classifier_params, seconds)
