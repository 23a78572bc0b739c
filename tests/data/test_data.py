"""DataModules (Sec. IV, Tables I-II): normalisation, fixed-seed search split, augmentation,
Cutout, and the loading paths of CIFAR, image folders, npz arrays and the quickstart set."""

from __future__ import annotations

import pickle
import socket

import numpy as np
import pytest
import torch
from conftest import CIFAR_NPZ, IMAGENET_MEAN, IMAGENET_STD
from torch import nn
from torchvision import datasets

from modulenet.data import (
    QUICKSTART_CLASSES,
    CIFAR10DataModule,
    CIFAR100DataModule,
    Cutout,
    ImageFolderDataModule,
    NpzDataModule,
    QuickstartDataModule,
    make_quickstart_images,
    read_cifar_batches,
    read_cifar_meta,
)
from modulenet.errors import DataError, ModuleNetError


def normalised(x_uint8_nhwc: np.ndarray) -> torch.Tensor:
    """The reference normalisation, written out independently of modulenet.data."""
    x = torch.from_numpy(x_uint8_nhwc).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def one_line_error(excinfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ModuleNetError)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture(scope="module")
def shared_arrays():
    if not CIFAR_NPZ.is_file():
        pytest.skip(f"shared CIFAR-10 arrays not found at {CIFAR_NPZ}")
    with np.load(CIFAR_NPZ) as data:
        return {k: data[k] for k in data.files}


# ---- Cutout ------------------------------------------------------------------------------------


def test_cutout_zeroes_the_square_around_the_centre():
    img = torch.ones(3, 10, 10)
    out = Cutout(4).erase(img, 5, 5)
    expected = torch.ones(3, 10, 10)
    expected[:, 3:7, 3:7] = 0  # rows/cols 5-2 .. 5+1
    assert torch.equal(out, expected)
    assert torch.equal(img, torch.ones(3, 10, 10))  # the input is not modified


def test_cutout_is_clipped_at_the_border():
    out = Cutout(4).erase(torch.ones(3, 10, 10), 0, 9)
    zero = out[0] == 0
    assert zero.sum() == 2 * 3  # rows 0..1 (-2..1 clipped), cols 7..9 (7..10 clipped)
    assert zero[:2, 7:].all() and torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    assert (out[:, 2:, :] == 1).all() and (out[:, :, :7] == 1).all()


def test_cutout_random_centre_zeroes_one_clipped_square_in_every_channel():
    cutout = Cutout(16, generator=torch.Generator().manual_seed(3))
    for _ in range(20):
        out = cutout(torch.ones(3, 32, 32))
        zero = out == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        assert 0 < len(rows) <= 16 and 0 < len(cols) <= 16
        box = zero[0][rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all() and zero[0].sum() == box.numel()  # one solid rectangle, nothing else
        assert len(rows) == 16 or rows[0] == 0 or rows[-1] == 31  # shorter only where clipped


def test_cutout_rejects_a_non_positive_length():
    with pytest.raises(DataError) as excinfo:
        Cutout(0)
    one_line_error(excinfo, "length=0")


# ---- Quickstart dataset -----------------------------------------------------------------------


def test_quickstart_generation_is_balanced_and_deterministic():
    x, y = make_quickstart_images(6000, 32, seed=0)
    assert x.shape == (6000, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == [600] * 10
    x2, y2 = make_quickstart_images(6000, 32, seed=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = make_quickstart_images(6000, 32, seed=1)
    assert not np.array_equal(x, x3)
    assert x.std() > 40  # real contrast, not a blank image


def test_quickstart_datamodule_splits_shapes_and_determinism():
    dm = QuickstartDataModule(num_train=200, num_val=100, num_test=50, seed=7)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (200, 100, 50)
    assert dm.num_classes == 10 and dm.image_size == 32 and dm.class_names == QUICKSTART_CLASSES
    x_train, y_train, x_val, y_val = dm.search_tensors()
    assert x_train.shape == (200, 3, 32, 32) and x_train.dtype == torch.float32 and y_train.dtype == torch.long
    for labels, n in ((y_train, 200), (y_val, 100), (torch.tensor([y for _, y in dm.test_set]), 50)):
        assert torch.bincount(labels, minlength=10).tolist() == [n // 10] * 10
    again = QuickstartDataModule(num_train=200, num_val=100, num_test=50, seed=7).search_tensors()
    assert all(torch.equal(a, b) for a, b in zip(dm.search_tensors(), again))
    other = QuickstartDataModule(num_train=200, num_val=100, num_test=50, seed=8).search_tensors()
    assert not torch.equal(x_train, other[0])
    # the vectorised search tensors are exactly what the per-item evaluation transform gives
    assert torch.allclose(torch.stack([dm.val_set[i][0] for i in range(len(dm.val_set))]), x_val)
    raw_val = dm.val_set.base.images.permute(0, 2, 3, 1).numpy()
    assert torch.allclose(x_val, normalised(raw_val), atol=1e-6)


def test_quickstart_is_learnable_by_a_small_cnn_but_not_by_a_linear_model():
    torch.manual_seed(0)
    x_train, y_train, x_val, y_val = QuickstartDataModule(num_train=1500, num_val=300, num_test=10).search_tensors()

    def fit(model, epochs, lr):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            perm = torch.randperm(len(x_train))
            for i in range(0, len(perm), 50):
                idx = perm[i : i + 50]
                loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            return (model(x_val).argmax(1) == y_val).float().mean().item()

    cnn = nn.Sequential(
        nn.Conv2d(3, 24, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(24, 48, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(48, 48, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(48, 10),
    )
    cnn_acc = fit(cnn, 4, 4e-3)
    linear_acc = fit(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), 10, 1e-3)
    assert cnn_acc > 0.5, cnn_acc  # chance is 0.1; ~0.85 in 4 epochs
    assert linear_acc < 0.5, linear_acc  # ~0.16: position, colour and scale defeat raw pixels
    assert cnn_acc > linear_acc + 0.25


def test_augment_and_cutout_touch_only_the_training_loader():
    dm = QuickstartDataModule(num_train=60, num_val=20, num_test=20, augment=True, cutout=16, batch_size=30)
    plain = QuickstartDataModule(num_train=60, num_val=20, num_test=20, batch_size=30)
    x_aug, y_aug = next(iter(dm.train_dataloader(shuffle=False)))
    x_plain, y_plain = next(iter(plain.train_dataloader(shuffle=False)))
    assert x_aug.shape == (30, 3, 32, 32) and torch.equal(y_aug, y_plain)
    assert not torch.equal(x_aug, x_plain)
    # Cutout (after normalisation) leaves an exact-zero square in every image: at least 8x8 even
    # when clipped at a corner, in all three channels
    assert ((x_aug == 0).all(1).flatten(1).sum(1) >= 64).all()
    assert all(torch.equal(a, b) for a, b in zip(dm.search_tensors(), plain.search_tensors()))
    assert torch.equal(next(iter(dm.val_dataloader()))[0], next(iter(plain.val_dataloader()))[0])
    assert torch.equal(next(iter(dm.test_dataloader()))[0], next(iter(plain.test_dataloader()))[0])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"num_train": 5}, "num_train=5"),
        ({"image_size": 8}, "image_size=8"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"cutout": -1}, "cutout=-1"),
        ({"seed": -3}, "seed=-3"),
    ],
)
def test_quickstart_bad_arguments_are_one_line_errors(kwargs, fragment):
    with pytest.raises(DataError) as excinfo:
        QuickstartDataModule(**kwargs)
    one_line_error(excinfo, fragment)


# ---- The search split -----------------------------------------------------------------------


def test_search_split_is_a_fixed_seed_partition():
    dm = QuickstartDataModule(seed=0)
    train, val = dm.split_indices(1000, 100)
    assert len(val) == 100 and len(train) == 900
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))
    assert torch.equal(val, QuickstartDataModule(seed=0).split_indices(1000, 100)[1])
    assert not torch.equal(val, QuickstartDataModule(seed=1).split_indices(1000, 100)[1])
    assert len(dm.split_indices(1000, 0.25)[1]) == 250
    assert len(dm.split_indices(1000, 10.0)[1]) == 10  # a whole float is a count (Hydra may give 10.0)


@pytest.mark.parametrize("val_size", [0, 1000, 1.5, -0.2, "100", True])
def test_search_split_rejects_sizes_that_leave_nothing(val_size):
    with pytest.raises(DataError) as excinfo:
        QuickstartDataModule().split_indices(1000, val_size)
    one_line_error(excinfo, f"val_size={val_size!r}")


@pytest.mark.parametrize(
    "make",
    [
        lambda v: CIFAR10DataModule(root="unused", val_size=v),
        lambda v: ImageFolderDataModule("unused", val_size=v),
        lambda v: NpzDataModule("unused.npz", val_size=v),
    ],
)
@pytest.mark.parametrize("val_size", [-5, 0, 2.5, "10%"])
def test_constructors_reject_bad_val_size_before_reading_data(make, val_size):
    with pytest.raises(DataError) as excinfo:
        make(val_size)
    one_line_error(excinfo, f"val_size={val_size!r}")


# ---- npz arrays (the real shared CIFAR-10 images) -------------------------------------------------


def test_npz_val_from_test_uses_x_test_for_validation_and_test(shared_arrays):
    dm = NpzDataModule(str(CIFAR_NPZ), val_from="test", batch_size=64)
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.image_size == 32 and dm.class_names[0] == "airplane"
    x_train, y_train, x_val, y_val = dm.search_tensors()
    assert len(x_train) == len(shared_arrays["x_train"]) and len(x_val) == len(shared_arrays["x_test"])
    assert torch.allclose(x_val, normalised(shared_arrays["x_test"]), atol=1e-6)
    assert torch.equal(y_val, torch.from_numpy(shared_arrays["y_test"]))
    assert torch.allclose(x_train[:50], normalised(shared_arrays["x_train"][:50]), atol=1e-6)
    x_test, y_test = next(iter(dm.test_dataloader()))
    assert torch.allclose(x_test, x_val[:64], atol=1e-6) and torch.equal(y_test, y_val[:64])


def test_npz_matches_the_conftest_normalisation(cifar_test_set):
    x_ref, y_ref = cifar_test_set
    _, _, x_val, y_val = NpzDataModule(str(CIFAR_NPZ), val_from="test").search_tensors()
    assert torch.allclose(x_val, x_ref, atol=1e-6) and torch.equal(y_val, y_ref)


def test_npz_val_from_train_draws_a_seeded_subset(shared_arrays):
    n = len(shared_arrays["x_train"])
    dm = NpzDataModule(str(CIFAR_NPZ), val_from="train", val_size=500, seed=0)
    x_train, y_train, x_val, y_val = dm.search_tensors()
    assert (len(x_train), len(x_val)) == (n - 500, 500)
    _, val_idx = dm.split_indices(n, 500)
    assert torch.allclose(x_val, normalised(shared_arrays["x_train"][val_idx.numpy()]), atol=1e-6)
    assert len(dm.test_set) == len(shared_arrays["x_test"])
    fraction = NpzDataModule(str(CIFAR_NPZ), val_size=0.1).search_tensors()
    assert len(fraction[2]) == round(0.1 * n)


def test_npz_val_from_test_split_validates_and_tests_on_disjoint_test_images(shared_arrays):
    n_test = len(shared_arrays["x_test"])
    dm = NpzDataModule(str(CIFAR_NPZ), val_from="test_split", val_size=500, seed=3, batch_size=n_test)
    x_train, _, x_val, y_val = dm.search_tensors()
    assert len(x_train) == len(shared_arrays["x_train"])  # every training image trains
    test_idx, val_idx = dm.split_indices(n_test, 500)
    assert set(test_idx.tolist()).isdisjoint(val_idx.tolist()) and len(test_idx) + len(val_idx) == n_test
    assert torch.allclose(x_val, normalised(shared_arrays["x_test"][val_idx.numpy()]), atol=1e-6)
    x_test, y_test = next(iter(dm.test_dataloader()))
    assert len(x_test) == n_test - 500
    assert torch.equal(y_test, torch.from_numpy(shared_arrays["y_test"][test_idx.numpy()]).long())
    assert torch.equal(dm.test_index, test_idx)  # what saved predictions record (finetune/network.py)
    with pytest.raises(DataError) as excinfo:
        NpzDataModule(str(CIFAR_NPZ), val_from="test_split", val_size=n_test).setup()
    one_line_error(excinfo, f"val_size={n_test}", f"1..{n_test - 1}")


def test_npz_errors_name_the_file_and_the_fix(tmp_path, shared_arrays):
    with pytest.raises(DataError) as excinfo:
        NpzDataModule(str(tmp_path / "nope.npz")).setup()
    one_line_error(excinfo, "nope.npz", "not found", "x_train")

    partial = tmp_path / "partial.npz"
    np.savez(
        partial,
        x_train=shared_arrays["x_train"][:20],
        y_train=shared_arrays["y_train"][:20],
        x_test=shared_arrays["x_test"][:10],
    )
    with pytest.raises(DataError) as excinfo:
        NpzDataModule(str(partial)).setup()
    one_line_error(excinfo, "partial.npz", "lacks y_test")

    floats = tmp_path / "floats.npz"
    np.savez(
        floats,
        x_train=np.zeros((20, 8, 8, 3), np.float32),
        y_train=np.zeros(20, np.int64),
        x_test=np.zeros((5, 8, 8, 3), np.float32),
        y_test=np.zeros(5, np.int64),
    )
    with pytest.raises(DataError) as excinfo:
        NpzDataModule(str(floats), val_size=5).setup()
    one_line_error(excinfo, "x_train is float32", "uint8")

    with pytest.raises(DataError) as excinfo:
        NpzDataModule(str(CIFAR_NPZ), val_size=6000).setup()
    one_line_error(excinfo, "val_size=6000", f"1..{len(shared_arrays['x_train']) - 1}")
    with pytest.raises(DataError) as excinfo:
        NpzDataModule(str(CIFAR_NPZ), val_size=0)
    one_line_error(excinfo, "val_size=0")
    with pytest.raises(DataError) as excinfo:
        NpzDataModule(str(CIFAR_NPZ), val_from="valid")
    one_line_error(excinfo, "val_from='valid'", "'train'", "'test'")


# ---- CIFAR: the genuine python-batch layout, written from the shared images ------------------------


def write_cifar10_layout(root, arrays) -> None:
    """The real cifar-10-batches-py layout (Python-2 style pickles of dicts with bytes keys)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name, x, y):
        entry = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in y],
            b"data": np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1)),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(len(x))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    for i, (x, y) in enumerate(zip(np.array_split(arrays["x_train"], 5), np.array_split(arrays["y_train"], 5))):
        dump(f"data_batch_{i + 1}", x, y)
    dump("test_batch", arrays["x_test"], arrays["y_test"])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {b"label_names": [c.encode() for c in arrays["classes"]], b"num_cases_per_batch": 10000, b"num_vis": 3072},
            f,
            protocol=2,
        )


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory, shared_arrays):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10_layout(root, shared_arrays)
    return root


def test_read_cifar_batches_round_trips_the_python_layout(cifar_root, shared_arrays):
    folder = cifar_root / "cifar-10-batches-py"
    x, y = read_cifar_batches(folder, [f"data_batch_{i}" for i in range(1, 6)])
    assert x.shape == shared_arrays["x_train"].shape and x.dtype == np.uint8
    assert np.array_equal(x, shared_arrays["x_train"]) and np.array_equal(y, shared_arrays["y_train"])
    x_test, y_test = read_cifar_batches(folder, ["test_batch"])
    assert np.array_equal(x_test, shared_arrays["x_test"]) and np.array_equal(y_test, shared_arrays["y_test"])
    assert read_cifar_meta(folder, "batches.meta", "label_names") == list(shared_arrays["classes"])


def test_cifar10_datamodule_reads_the_layout_with_the_user_code_path(cifar_root, shared_arrays):
    # verify_integrity=False skips only the md5 comparison (these re-packed files have other md5s);
    # everything else is the path users run after torchvision's download and check.
    dm = CIFAR10DataModule(root=str(cifar_root), download=False, val_size=1000, verify_integrity=False, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    n = len(shared_arrays["x_train"])
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (n - 1000, 1000, len(shared_arrays["x_test"]))
    assert dm.class_names == list(shared_arrays["classes"]) and dm.num_classes == 10 and dm.image_size == 32
    x_train, y_train, x_val, y_val = dm.search_tensors()
    train_idx, val_idx = dm.split_indices(n, 1000)
    assert torch.allclose(x_val, normalised(shared_arrays["x_train"][val_idx.numpy()]), atol=1e-6)
    assert torch.equal(y_train, torch.from_numpy(shared_arrays["y_train"][train_idx.numpy()]))
    x_test, y_test = next(iter(dm.test_dataloader()))
    assert torch.allclose(x_test, normalised(shared_arrays["x_test"][: len(x_test)]), atol=1e-6)


def test_cifar10_val_from_test_trains_on_every_training_image(cifar_root, shared_arrays):
    # Table III (DARTS' scheme): all training images train, the test split validates.
    dm = CIFAR10DataModule(root=str(cifar_root), download=False, val_from="test", verify_integrity=False, seed=0)
    dm.setup("fit")
    assert len(dm.train_set) == len(shared_arrays["x_train"]) and len(dm.val_set) == len(shared_arrays["x_test"])
    x_train, y_train, x_val, y_val = dm.search_tensors()
    assert torch.equal(y_val, torch.from_numpy(shared_arrays["y_test"]).long())
    with pytest.raises(DataError, match="val_from='valid'"):
        CIFAR10DataModule(root=str(cifar_root), val_from="valid")


def test_cifar_files_failing_torchvisions_md5_check_are_rejected(cifar_root):
    dm = CIFAR10DataModule(root=str(cifar_root), download=False)
    with pytest.raises(DataError) as excinfo:
        dm.setup()
    one_line_error(excinfo, "md5", "data_batch_1", "download=true")


def test_cifar_missing_without_download_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError) as excinfo:
        CIFAR10DataModule(root=str(tmp_path), download=False).setup()
    one_line_error(excinfo, "CIFAR-10 not found under", str(tmp_path), "download=false", "cifar-10-batches-py")
    with pytest.raises(DataError) as excinfo:
        CIFAR100DataModule(root=str(tmp_path), download=False).setup()
    one_line_error(excinfo, "CIFAR-100 not found", "cifar-100-python")


def test_cifar_partial_folder_names_the_missing_files(tmp_path, cifar_root):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes((cifar_root / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    with pytest.raises(DataError) as excinfo:
        CIFAR10DataModule(root=str(tmp_path), download=False).setup()
    one_line_error(excinfo, "lacks data_batch_2", "test_batch")


def test_cifar_batch_pickles_may_not_run_code(tmp_path):
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": print}, protocol=2))
    with pytest.raises(DataError) as excinfo:
        read_cifar_batches(tmp_path, ["evil"])
    one_line_error(excinfo, "evil", "not a readable python batch")


def _with_short_socket_timeout(fn):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)  # an unreachable network must fail, never hang the suite
    try:
        return fn()
    finally:
        socket.setdefaulttimeout(previous)


def test_cifar_download_failure_is_a_one_line_error(tmp_path, monkeypatch):
    # A refused connection on this host: the same failure path as no network, on any machine.
    monkeypatch.setattr(datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    dm = CIFAR10DataModule(root=str(tmp_path), download=True)
    with pytest.raises(DataError) as excinfo:
        _with_short_socket_timeout(dm.prepare_data)
    one_line_error(excinfo, "could not download CIFAR-10", str(tmp_path), "download=false", "cifar-10-batches-py")


def test_cifar_real_download_without_network_is_a_one_line_error(tmp_path):
    try:  # never pull 170 MB into a unit test where the network happens to work
        _with_short_socket_timeout(lambda: socket.create_connection(("www.cs.toronto.edu", 443), timeout=3).close())
        pytest.skip("network reachable: the offline download failure cannot be observed here")
    except OSError:
        pass
    dm = CIFAR100DataModule(root=str(tmp_path), download=True)
    with pytest.raises(DataError) as excinfo:
        _with_short_socket_timeout(dm.prepare_data)
    one_line_error(excinfo, "could not download CIFAR-100", "check the network")


# ---- Image folders ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("val", 2)):
        for cls in ("ant", "bee", "cat"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                h, w = rng.integers(36, 60, 2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_image_folder_split_transforms_and_search_tensors(folder_root):
    dm = ImageFolderDataModule(str(folder_root), image_size=32, val_size=3, batch_size=4, augment=True, cutout=8)
    dm.setup("fit")
    assert dm.class_names == ["ant", "bee", "cat"] and dm.num_classes == 3 and dm.image_size == 32
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15, 3, 6)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    x_train, y_train, x_val, y_val = dm.search_tensors()
    assert x_train.shape == (15, 3, 32, 32) and x_val.shape == (3, 3, 32, 32)
    # search tensors use the deterministic evaluation transform: same on a fresh module
    again = ImageFolderDataModule(str(folder_root), image_size=32, val_size=3).search_tensors()
    assert all(torch.equal(a, b) for a, b in zip((x_train, y_train, x_val, y_val), again))
    # eval: Resize(32 * 256/224 = 37) then CenterCrop(32), then the ImageNet normalisation
    assert -2.2 < float(x_val.min()) and float(x_val.max()) < 2.7
    x_test, y_test = next(iter(dm.test_dataloader()))
    assert x_test.shape == (4, 3, 32, 32) and y_test.tolist() == [0, 0, 1, 1]


def test_image_folder_missing_or_mismatched_folders(tmp_path, folder_root):
    (tmp_path / "train" / "ant").mkdir(parents=True)
    with pytest.raises(DataError) as excinfo:
        ImageFolderDataModule(str(tmp_path), image_size=32, val_size=1).setup()
    one_line_error(excinfo, str(tmp_path), "no val/ folder")
    with pytest.raises(DataError) as excinfo:
        ImageFolderDataModule(str(tmp_path / "absent"), image_size=32).setup()
    one_line_error(excinfo, "no train/ folder")
    (tmp_path / "val" / "bee").mkdir(parents=True)
    (tmp_path / "val" / "bee" / "0.png").write_bytes((folder_root / "val" / "bee" / "0.png").read_bytes())
    (tmp_path / "train" / "ant" / "0.png").write_bytes((folder_root / "train" / "ant" / "0.png").read_bytes())
    (tmp_path / "train" / "ant" / "1.png").write_bytes((folder_root / "train" / "ant" / "1.png").read_bytes())
    with pytest.raises(DataError) as excinfo:
        ImageFolderDataModule(str(tmp_path), image_size=32, val_size=1).setup()
    one_line_error(excinfo, "not the same names", "ant")


class BareDataModule(__import__("pytorch_lightning").LightningDataModule):
    """A LightningDataModule with loaders but none of what the method reads of a dataset."""

    num_classes = 10

    def train_dataloader(self):
        return []


def test_a_dataset_that_breaks_the_contract_is_one_line_when_built():
    """Issue 32: the dataset contract (data/contract.py) is checked when the dataset is built,
    naming what is missing; the built-in ones keep it."""
    from omegaconf import OmegaConf

    from modulenet.app.builders import make_datamodule
    from modulenet.data.contract import CONTRACT, SearchDataModule

    protocol = {n for n in SearchDataModule.__dict__ if not n.startswith("_")} | set(SearchDataModule.__annotations__)
    assert set(CONTRACT) == protocol  # the names checked are the protocol's
    with pytest.raises(
        ModuleNetError, match=r"BareDataModule. lacks image_size, search_tensors: a dataset must provide num_classes"
    ):
        make_datamodule(OmegaConf.create({"_target_": f"{__name__}.BareDataModule"}))
    quickstart = make_datamodule(
        OmegaConf.create(
            {"_target_": "modulenet.data.QuickstartDataModule", "num_train": 64, "num_val": 16, "num_test": 16}
        )
    )
    assert isinstance(quickstart, SearchDataModule)
