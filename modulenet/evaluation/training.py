"""Training one task of the search stage (Sec. III-E, Sec. IV; Algorithm 1 lines 11 and 16), in
the process that runs it: each genotype assembled once into a `Candidate`, its frozen trunk's
classifier trained for `epochs` (20 in the paper) with cross-entropy, and its `Evaluation`
recorded: err_val = 1 - acc_val (Eq. 5), l_rate from the first and last epoch's mean training
loss (Eq. 6), sim from the genotype (Eq. 7-8), score (Eq. 4).

Two ways, the same results: `LightningTraining` (one individual at a time by a Lightning
`Trainer`; the plain way, and the only one where a conv1x1 link trains) and `StackedTraining`
(ours, speed only: a group on cached features with stacked classifiers, evaluation/stacked.py).
`EvaluationWorker` is the handler every dispatcher builds where tasks run (runtime/dispatch.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch.utils.data import DataLoader, TensorDataset

from modulenet.errors import first_line
from modulenet.evaluation.candidate import Candidate, trunk_features
from modulenet.evaluation.lit_module import Classifier, IndividualModule, pool_features
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.evaluation.stacked import StackedIndividuals, prefix_shared_features
from modulenet.genotype import Genotype, format_genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.rng import seeded
from modulenet.runtime.dispatch import worker_accelerator
from modulenet.runtime.precision import is_bf16
from modulenet.runtime.trainer import accelerator_device, make_trainer, quiet_lightning, use_float32_matmul_precision
from modulenet.search.records import Evaluation
from modulenet.search.score import loss_rate, search_score, similarity

log = logging.getLogger(__name__)

SearchData = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # x_train, y_train, x_val, y_val


def adam(settings: EvaluationSettings, fused: bool) -> Callable[..., torch.optim.Optimizer]:
    """The classifier's optimizer: Adam (lr 1e-3, batch 256 by default) is this project's choice,
    the paper names no optimiser for the search stage (Sec. IV). `fused`: one kernel per step instead of
    torch's default per-tensor loop, which on CPU re-reads the stacked weights about six times
    and took a third of each stacked step (measured: 1.0 s vs 0.13 s for 8 4096-4096 heads).
    Same update up to float rounding; the plain way keeps torch's default."""
    s = settings
    return lambda params, capturable=False: torch.optim.Adam(
        params, lr=s.lr, weight_decay=s.weight_decay, fused=True if fused else None, capturable=capturable
    )


class Training:
    """What both ways share: the knowledge base, the search data on the training device, the
    settings (precision already chosen) and how a trained individual becomes an `Evaluation`."""

    def __init__(
        self, kb: KnowledgeBase, data: SearchData, num_classes: int, settings: EvaluationSettings, device: torch.device
    ):
        self.kb, self.num_classes, self.settings, self.device = kb, num_classes, settings, device
        self.x_train, self.y_train, self.x_val, self.y_val = data
        self.image_shape = tuple(self.x_train.shape[1:])

    def candidate(self, code: Genotype) -> Candidate:
        return Candidate.assemble(self.kb, code, self.settings, self.image_shape, self.device)

    def record(
        self, candidate: Candidate, val_accuracy: float, epoch_losses, classifier_params: int, seconds: float
    ) -> Evaluation:
        """An individual's Evaluation: Eq. 4's terms (err_val, Eq. 5; l_rate, Eq. 6; sim, Eq. 8), size and cost."""
        s, code = self.settings, candidate.code
        err_val, l_rate, sim = 1.0 - val_accuracy, loss_rate(epoch_losses), similarity(code)
        return Evaluation(
            genotype=code,
            score=search_score(err_val, l_rate, sim, s.alpha, s.beta),
            err_val=err_val,
            l_rate=l_rate,
            sim=sim,
            epoch_losses=list(epoch_losses),
            params=candidate.trunk_params + classifier_params,
            flops=candidate.flops,
            seconds=seconds,
        )

    def released(self) -> None:
        """After a failure: give the device's cached memory back before the next try."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class LightningTraining(Training):
    """One individual at a time by a Lightning `Trainer`: on cached trunk features where the trunk
    is parameter-free, else with the frozen trunk in every step (and a conv1x1 link training)."""

    def __call__(self, task: Sequence[Genotype]) -> list[Evaluation]:
        return [self.evaluate(code) for code in task]

    def evaluate(self, code: Genotype, candidate: Candidate | None = None) -> Evaluation:
        """One individual; a failure is retried once at half the batch size (a fresh trunk: a
        training link may have moved), then recorded as failed with the worst score so the search goes on."""
        s = self.settings
        batch_size, feature_batch_size, error = s.batch_size, s.feature_batch_size, ""
        for attempt in range(2):
            try:
                if candidate is None or attempt > 0:
                    candidate = self.candidate(code)
                return self.train(candidate, batch_size, feature_batch_size)
            except (RuntimeError, MemoryError) as err:  # out of memory and friends
                error = first_line(err)
                log.warning("individual %s failed at batch size %d: %s", format_genotype(code), batch_size, error)
                self.released()
                batch_size, feature_batch_size = max(1, batch_size // 2), max(1, feature_batch_size // 2)
        return Evaluation.failed(code, error)

    def train(self, candidate: Candidate, batch_size: int, feature_batch_size: int) -> Evaluation:
        s = self.settings
        start = time.perf_counter()
        trunk = candidate.trunk
        if s.features_cached:
            x_train = trunk_features(trunk, self.x_train, feature_batch_size, self.device)
            x_val = trunk_features(trunk, self.x_val, feature_batch_size, self.device)
            model_trunk = None
        else:  # the plain way: the frozen trunk runs in every step (and a conv1x1 link trains)
            x_train, x_val, model_trunk = self.x_train, self.x_val, trunk
        with seeded(s.seed, self.device), quiet_lightning():
            model = IndividualModule(
                model_trunk, candidate.in_features, self.num_classes, s.hidden, s.pool, s.dropout, adam(s, fused=False)
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
        return self.record(candidate, model.val_accuracy, model.epoch_losses, classifier_params, seconds)


class StackedTraining(Training):
    """A group on cached, prefix-shared features with its classifiers stacked (evaluation/stacked.py);
    if the group fails together (out of memory, say), each individual alone the Lightning way."""

    def __init__(self, *args):
        super().__init__(*args)
        self.single = LightningTraining(*args)

    def __call__(self, task: Sequence[Genotype]) -> list[Evaluation]:
        candidates = [self.candidate(code) for code in task]
        by_width: dict[int, list[Candidate]] = {}
        for candidate in candidates:  # the planner's widths are per architecture; these are measured
            by_width.setdefault(candidate.in_features, []).append(candidate)
        done = {}
        for group in by_width.values():
            for evaluation in self.evaluate_group(group):
                done[evaluation.genotype] = evaluation
        return [done[code] for code in task]

    def evaluate_group(self, group: list[Candidate]) -> list[Evaluation]:
        try:
            return self.train(group)
        except (RuntimeError, MemoryError) as err:
            names = " ".join(format_genotype(c.code) for c in group)
            log.warning("group %s failed together (%s); evaluating one by one", names, first_line(err))
            self.released()
            return [self.single.evaluate(c.code, c) for c in group]

    def train(self, group: list[Candidate]) -> list[Evaluation]:
        s = self.settings
        start = time.perf_counter()
        channels_last = self.device.type == "cuda"
        if channels_last:
            for candidate in group:
                candidate.trunk.to(memory_format=torch.channels_last)
        x_train, x_val = self.features(group, channels_last)
        with seeded(s.seed, self.device):
            template = Classifier(x_train.shape[-1], self.num_classes, s.hidden, s.dropout)  # each individual's init
            model = StackedIndividuals(
                x_train,
                self.y_train.to(self.device),
                x_val,
                self.y_val.to(self.device),
                template,
                optimizer=adam(s, fused=self.device.type in ("cpu", "cuda")),
                precision=s.precision,
            )
            model.fit(s.epochs, s.batch_size, torch.Generator().manual_seed(s.seed), graph=s.graph_step)
            model.validate(s.batch_size)
        seconds = (time.perf_counter() - start) / len(group)
        classifier_params = model.classifier.num_params()
        return [
            self.record(candidate, model.val_accuracies[g], model.epoch_losses[g], classifier_params, seconds)
            for g, candidate in enumerate(group)
        ]

    def features(self, group: list[Candidate], channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The group's pooled trunk features, stacked (individual, image, feature): computed once
        per shared module prefix when `share_prefixes`, each trunk on its own otherwise."""
        s = self.settings
        trunks = {c.code: c.trunk for c in group}
        feature_dtype = torch.bfloat16 if is_bf16(s.precision) else torch.float32
        # bf16 convolutions pay off on GPUs only: CPUs without AMX run them slower than fp32 (about
        # 3x here), while their bf16 matrix products (the classifier) are about 2.3x faster.
        trunk_bf16 = feature_dtype == torch.bfloat16 and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=trunk_bf16):
            if s.share_prefixes:
                train, val = (
                    prefix_shared_features(
                        trunks, x, s.feature_batch_size, self.device, s.pool, channels_last, feature_dtype
                    )[0]
                    for x in (self.x_train, self.x_val)
                )
            else:
                train, val = (
                    {
                        code: pool_features(trunk_features(trunk, x, s.feature_batch_size, self.device), s.pool).to(
                            feature_dtype
                        )
                        for code, trunk in trunks.items()
                    }
                    for x in (self.x_train, self.x_val)
                )
        codes = [c.code for c in group]
        return torch.stack([train.pop(code) for code in codes]), torch.stack([val.pop(code) for code in codes])


class EvaluationWorker:
    """The handler a dispatcher builds where tasks run (runtime/dispatch.py): the training way the
    settings call for, on this worker's device, one task (a list of genotypes) per call."""

    def __init__(self, kb: KnowledgeBase, data: SearchData, num_classes: int, settings: EvaluationSettings, device):
        settings = replace(settings, accelerator=worker_accelerator(device, settings.accelerator))
        where = accelerator_device(settings.accelerator)
        use_float32_matmul_precision(where, settings.float32_matmul_precision)
        if where.type == "cuda":  # faster host-to-device copies of image batches
            x_train, y_train, x_val, y_val = data
            data = (x_train.pin_memory(), y_train, x_val.pin_memory(), y_val)
        self.kb, self.device = kb, where
        way = StackedTraining if settings.stacked else LightningTraining
        self.training = way(kb, data, num_classes, settings, where)

    def __call__(self, task: Sequence[Genotype]) -> list[Evaluation]:
        # Frozen trunks share the knowledge base's modules, so all of them go to this device at
        # once: a trunk moved alone would leave its modules' neighbours on another device.
        self.kb.to(self.device)
        return self.training([tuple(code) for code in task])
