import numpy as np
import pytest

from fedsecure.data import load_medmnist
from fedsecure.errors import DataError
from tests.conftest import write_medmnist


def test_loads_the_shared_pneumoniamnist(pneumonia_path):
    splits = load_medmnist(pneumonia_path)
    assert splits.train.images.shape == (2428, 1, 28, 28)
    assert splits.val.images.shape == (270, 1, 28, 28)
    assert splits.test.images.shape == (468, 1, 28, 28)
    assert splits.train.images.dtype == np.float32
    assert 0.0 <= splits.train.images.min() and splits.train.images.max() <= 1.0
    assert splits.n_classes == 2
    assert splits.train.labels.dtype == np.int64
    assert np.bincount(splits.test.labels).tolist() == [234, 234]


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("label_shape", ["column", "flat"])
def test_accepts_grayscale_rgb_and_both_label_shapes(tmp_path, rgb, label_shape):
    path = write_medmnist(tmp_path / "d.npz", rgb=rgb, label_shape=label_shape, n_classes=3)
    raw = np.load(path)
    splits = load_medmnist(path)
    channels = 3 if rgb else 1
    assert splits.train.images.shape == (12, channels, 8, 8)
    assert splits.in_channels == channels and splits.n_classes == 3
    assert splits.train.labels.shape == (12,)
    # pixel (0, row 2, col 5) of image 3 survives the layout change and scaling
    expected = raw["train_images"][3, 2, 5, 1] if rgb else raw["train_images"][3, 2, 5]
    assert splits.train.images[3, 1 if rgb else 0, 2, 5] == pytest.approx(expected / 255)


def test_val_split_is_optional(tmp_path):
    path = write_medmnist(tmp_path / "d.npz", val_images=None, val_labels=None)
    assert len(load_medmnist(path).val) == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_labels": None}, "missing array(s) train_labels"),
        ({"test_images": None, "test_labels": None}, "missing array(s) test_images, test_labels"),
        ({"train_labels": np.zeros((11, 1), np.int64)}, "12 images but 11 labels"),
        ({"train_images": np.zeros((12, 8, 8), np.float32)}, "dtype float32; MedMNIST images are uint8"),
        ({"train_labels": np.zeros((12, 1), np.float64)}, "expected integer class labels"),
        ({"train_labels": np.zeros((12, 3), np.int64)}, "multi-label tasks are not supported"),
        ({"train_images": np.zeros((12, 8), np.uint8)}, "expected (N, H, W), (N, H, W, 3) or (N, D, H, W)"),
        ({"train_images": np.zeros((12, 4, 4, 4, 4, 4), np.uint8)}, "has shape (12, 4, 4, 4, 4, 4); expected"),
        ({"test_images": np.zeros((6, 9, 9), np.uint8)}, "different image shapes"),
        ({"train_labels": -np.ones((12, 1), np.int64)}, "negative class labels"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, overrides, message):
    path = write_medmnist(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataError) as error:
        load_medmnist(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_refuses_object_arrays_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):  # would run on unpickling
            return (pytest.fail, ("the loader unpickled input",))

    objects = np.empty(12, dtype=object)
    objects[:] = [Boom() for _ in range(12)]
    path = write_medmnist(tmp_path / "evil.npz", train_labels=objects)
    with pytest.raises(DataError, match="object \\(pickled\\) array; refusing to unpickle"):
        load_medmnist(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        load_medmnist(tmp_path / "absent.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_medmnist(corrupt)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_medmnist(text)


def test_single_class_file_is_refused(tmp_path):
    path = write_medmnist(tmp_path / "one.npz", n_classes=1)
    with pytest.raises(DataError, match="single class"):
        load_medmnist(path)


def test_3d_medmnist_volumes_load_channels_first(tmp_path):
    volumes = np.random.default_rng(0).integers(0, 256, size=(12, 5, 6, 7), dtype=np.uint8)
    path = write_medmnist(tmp_path / "v.npz", train_images=volumes, val_images=None, val_labels=None,
                          test_images=volumes[:6])
    splits = load_medmnist(path)
    assert splits.train.images.shape == (12, 1, 5, 6, 7) and splits.image_size == (5, 6, 7)
    np.testing.assert_array_equal(splits.train.images[3, 0], volumes[3] / np.float32(255))
