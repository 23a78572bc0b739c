"""trainer.precision=auto: the classifiers' step measured in float32 and bf16, the choice cached
per machine; explicit precisions obeyed (issue 15)."""

from __future__ import annotations

import json

import pytest
import torch

from modulenet.errors import ModuleNetError
from modulenet.evaluation.evaluator import Evaluator
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.evaluation.stacked import HeadShape
from modulenet.knowledge import build_knowledge_base
from modulenet.runtime import precision
from modulenet.runtime.precision import BF16, FLOAT32, MARGIN, choose_precision

CPU = torch.device("cpu")
HEAD = HeadShape(in_features=32, hidden=(64, 64), classes=4, copies=2, batch_size=16)


@pytest.mark.parametrize("given", ["32-true", "bf16-mixed", "16-mixed"])
def test_an_explicit_precision_is_obeyed(given):
    assert choose_precision(given, CPU, HEAD).precision == given


def test_a_bad_precision_is_one_line():
    with pytest.raises(ModuleNetError, match="trainer.precision='fp8': valid values are auto, 32-true"):
        choose_precision("fp8", CPU, HEAD)


def test_auto_without_bf16_units_is_float32_without_measuring(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "has_bf16_units", lambda device: False)
    monkeypatch.setattr(HeadShape, "seconds", lambda *a, **k: pytest.fail("measured"))
    choice = choose_precision("auto", CPU, HEAD, cache=tmp_path / "precision.json")
    assert choice.precision == FLOAT32 and "no bf16 matrix units" in choice.reason
    assert not (tmp_path / "precision.json").exists()


def test_auto_for_whole_networks_on_a_cpu_is_float32(monkeypatch):
    monkeypatch.setattr(precision, "has_bf16_units", lambda device: True)
    assert choose_precision("auto", CPU, None).precision == FLOAT32


def test_auto_measures_once_picks_the_faster_and_caches_per_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "has_bf16_units", lambda device: True)  # measure even on AVX2
    cache = tmp_path / "precision.json"
    rng_before = torch.get_rng_state()
    first = choose_precision("auto", CPU, HEAD, cache=cache)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global generator is left alone
    fp32, bf16 = first.seconds[FLOAT32], first.seconds[BF16]
    assert fp32 > 0 and bf16 > 0
    assert first.precision == (BF16 if fp32 >= MARGIN * bf16 else FLOAT32)
    ((key, entry),) = json.loads(cache.read_text()).items()
    assert precision.device_model(CPU) in key and f"torch {torch.__version__}" in key
    assert entry["seconds"] == first.seconds

    monkeypatch.setattr(HeadShape, "seconds", lambda *a, **k: pytest.fail("measured twice"))
    again = choose_precision("auto", CPU, HEAD, cache=cache)
    assert again.precision == first.precision and "cached" in again.reason

    # The cached numbers decide: a machine measured with bf16 twice as fast chooses bf16.
    cache.write_text(json.dumps({key: {**entry, "seconds": {FLOAT32: 2.0, BF16: 1.0}}}))
    assert choose_precision("auto", CPU, HEAD, cache=cache).precision == BF16
    cache.write_text(json.dumps({key: {**entry, "seconds": {FLOAT32: 1.0, BF16: 0.95}}}))
    assert choose_precision("auto", CPU, HEAD, cache=cache).precision == FLOAT32  # within the margin


def test_an_unreadable_cache_is_measured_again(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "has_bf16_units", lambda device: True)
    cache = tmp_path / "precision.json"
    cache.write_text("{not json")
    choice = choose_precision("auto", CPU, HEAD, cache=cache)
    assert choice.precision in (FLOAT32, BF16) and "measured now" in choice.reason
    assert len(json.loads(cache.read_text())) == 1


def test_the_evaluator_resolves_auto_and_keys_its_memo_by_the_choice(tmp_path):
    torch.manual_seed(0)
    kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False)
    x, y = torch.randn(48, 3, 32, 32), torch.randint(0, 4, (48,))
    data = (x[:32], y[:32], x[32:], y[32:])
    base = dict(epochs=1, hidden=[32, 32], pool="avg", batch_size=16, feature_batch_size=16)
    auto = Evaluator(kb, data, 4, EvaluationSettings(**base, precision="auto"), progress=False)
    assert auto.settings.precision in (FLOAT32, BF16)
    explicit = Evaluator(kb, data, 4, EvaluationSettings(**base, precision=auto.settings.precision), progress=False)
    assert auto.settings.fingerprint() == explicit.settings.fingerprint()
    (result,) = auto([(0, 1, 0)])
    assert result.status == "ok"


def test_a_resumed_search_keeps_the_precision_auto_chose_for_it(monkeypatch, tmp_path):
    """A new measurement could choose otherwise (tiny heads time within the margin; another thread
    count is another cache key), and the resume would be refused: `auto` takes the run's choice."""
    from modulenet.app import bundle

    auto = EvaluationSettings(precision="auto")
    assert bundle.resumed_precision(auto, tmp_path) is None  # no checkpoint: measured as usual
    (tmp_path / "search_state.json").write_text(json.dumps({"depends_on": {"precision": FLOAT32}}))
    assert bundle.resumed_precision(auto, tmp_path) == FLOAT32
    assert bundle.resumed_precision(EvaluationSettings(precision=BF16), tmp_path) is None  # as given
    (tmp_path / "search_state.json").write_text(json.dumps({"depends_on": {"precision": BF16}}))
    monkeypatch.setattr(bundle, "has_bf16_units", lambda device: True)
    assert bundle.resumed_precision(auto, tmp_path) == BF16
    monkeypatch.setattr(bundle, "has_bf16_units", lambda device: False)  # emulated bf16: measure instead
    assert bundle.resumed_precision(auto, tmp_path) is None


@pytest.mark.parametrize(
    "entry",
    [
        {"seconds": {FLOAT32: 1.0, BF16: 0.5}},  # no `measured`
        {"seconds": {FLOAT32: "1.0", BF16: 0.5}, "measured": "x"},
        {"seconds": {FLOAT32: None, BF16: 0.5}, "measured": "x"},
        {"seconds": {FLOAT32: 1.0, BF16: -0.5}, "measured": "x"},
        {"seconds": {FLOAT32: 0.0, BF16: 0.5}, "measured": "x"},
        {"seconds": {FLOAT32: float("inf"), BF16: 0.5}, "measured": "x"},
        {"seconds": {FLOAT32: True, BF16: 0.5}, "measured": "x"},
        "not an entry",
    ],
)
def test_a_damaged_cache_entry_is_measured_again_with_a_warning(monkeypatch, tmp_path, caplog, entry):
    """Issue 25: an entry of the wrong shape or with timings that are no timings is measured again
    (a warning, never a traceback), and the cache is rewritten whole with the new measurement."""
    monkeypatch.setattr(precision, "has_bf16_units", lambda device: True)
    cache = tmp_path / "precision.json"
    first = choose_precision("auto", CPU, HEAD, cache=cache)
    ((key, _),) = json.loads(cache.read_text()).items()
    cache.write_text(json.dumps({key: entry}))
    with caplog.at_level("WARNING", logger="modulenet"):
        again = choose_precision("auto", CPU, HEAD, cache=cache)
    assert "measured now" in again.reason and "damaged" in caplog.text
    assert again.precision in (FLOAT32, BF16) and first.precision in (FLOAT32, BF16)
    stored = json.loads(cache.read_text())[key]
    assert stored["seconds"] == again.seconds and isinstance(stored["measured"], str)


def test_auto_for_a_fine_tuned_network_is_measured_on_a_copy_once_and_cached(monkeypatch, tmp_path):
    """Issue 23: a whole network's own SGD step timed in float32 and bf16 (where the device has bf16
    units), on a copy: the network and the global generator are untouched; cached per shape."""
    from torch import nn

    from modulenet.runtime.precision import NetworkStep

    monkeypatch.setattr(precision, "has_bf16_units", lambda device: True)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cache = tmp_path / "precision.json"
    step = NetworkStep(model, "tiny conv", image_size=8, batch_size=4, classes=3)
    first = choose_precision("auto", CPU, step, cache=cache)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(torch.get_rng_state(), rng)
    ((key, entry),) = json.loads(cache.read_text()).items()
    assert "network tiny conv 8px x4" in key and entry["seconds"] == first.seconds
    monkeypatch.setattr(NetworkStep, "seconds", lambda *a, **k: pytest.fail("measured twice"))
    assert choose_precision("auto", CPU, step, cache=cache).precision == first.precision


def test_a_fine_tune_with_auto_trains_in_the_measured_precision_and_records_it(monkeypatch):
    from modulenet.data import QuickstartDataModule
    from modulenet.finetune.settings import FinetuneSettings
    from modulenet.finetune.training import finetune_architecture
    from modulenet.knowledge import build_knowledge_base
    from modulenet.runtime.precision import NetworkStep

    monkeypatch.setattr(precision, "has_bf16_units", lambda device: True)
    monkeypatch.setattr(NetworkStep, "seconds", lambda self, device: {FLOAT32: 2.0, BF16: 1.0})
    kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False)
    dm = QuickstartDataModule(num_train=32, num_val=16, num_test=16, batch_size=16, seed=0)
    settings = FinetuneSettings(epochs=1, hidden=[8], pool="avg", batch_size=16, precision="auto")
    _, description = finetune_architecture(kb, (0, 1, 1), dm, settings, progress=False)
    assert description["precision"] == BF16


def test_the_layout_of_a_fine_tuned_network_is_measured_obeyed_or_refused(monkeypatch, tmp_path):
    """Issue 23: trainer.memory_format=auto times the network's step contiguous and channels-last on
    copies (cached per machine, shape and precision) and takes channels-last only where it is at
    least MARGIN faster; an explicit layout is obeyed; anything else is one line."""
    from torch import nn

    from modulenet.runtime.precision import CHANNELS_LAST, CONTIGUOUS, NetworkStep, choose_memory_format
    from modulenet.runtime.settings import TrainerSettings

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cache = tmp_path / "precision.json"
    step = NetworkStep(model, "tiny conv", image_size=8, batch_size=4, classes=3)
    first = choose_memory_format("auto", CPU, step, FLOAT32, cache=cache)
    assert set(first.seconds) == {CONTIGUOUS, CHANNELS_LAST} and min(first.seconds.values()) > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model[0].weight.is_contiguous()  # timed on copies
    ((key, entry),) = json.loads(cache.read_text()).items()
    assert "network tiny conv 8px x4 32-true layout" in key
    faster, within_margin = {CONTIGUOUS: 2.0, CHANNELS_LAST: 1.0}, {CONTIGUOUS: 1.0, CHANNELS_LAST: 0.95}
    for seconds, chosen in ((faster, CHANNELS_LAST), (within_margin, CONTIGUOUS)):
        cache.write_text(json.dumps({key: {**entry, "seconds": seconds}}))
        assert choose_memory_format("auto", CPU, step, FLOAT32, cache=cache).memory_format == chosen
    monkeypatch.setattr(NetworkStep, "layout_seconds", lambda *a: pytest.fail("measured"))
    assert choose_memory_format(CHANNELS_LAST, CPU, step, FLOAT32).memory_format == CHANNELS_LAST
    valid = r"\['auto', 'contiguous', 'channels_last'\]"
    with pytest.raises(ModuleNetError, match=rf"trainer.memory_format='nhwc'; valid values are {valid}"):
        TrainerSettings(memory_format="nhwc")


def test_a_channels_last_fine_tune_trains_in_it_and_its_reload_measures_the_same_error(tmp_path):
    from torch import nn

    from modulenet.data import QuickstartDataModule
    from modulenet.finetune.network import load_network, measure_network, save_network
    from modulenet.finetune.settings import FinetuneSettings
    from modulenet.finetune.training import finetune_architecture

    torch.manual_seed(0)
    kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False)
    dm = QuickstartDataModule(num_train=32, num_val=16, num_test=16, batch_size=16, seed=0)
    layouts = []

    def record(module, args):
        if isinstance(module, nn.Conv2d) and torch.is_grad_enabled():
            layouts.append(module.weight.is_contiguous(memory_format=torch.channels_last))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        settings = FinetuneSettings(epochs=1, hidden=[8], pool="avg", batch_size=16, memory_format="channels_last")
        network, description = finetune_architecture(kb, (0, 1, 1), dm, settings, progress=False)
    finally:
        handle.remove()
    assert layouts and all(layouts) and description["memory_format"] == "channels_last"
    folder = save_network(tmp_path / "network", network, description)
    reloaded = load_network(folder)
    assert measure_network(reloaded, dm.test_dataloader())["error"] == description["test_error"]
