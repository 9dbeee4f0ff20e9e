"""3D volumes end to end: MedMNIST 3D files, the same federation from NIfTI datalists, 3D models and figures."""

from __future__ import annotations

import numpy as np
import pytest

from fedsecure.audit.runner import run_audit
from fedsecure.cli import main
from fedsecure.config.spec import parse_spec
from fedsecure.data.medmnist import load_medmnist
from fedsecure.report.png import as_picture
from tests.conftest import write_medmnist
from tests.fedsecure.test_bad_input import assert_one_line_error, run_cli


def test_medmnist3d_volumes_load_channels_first(adrenal3d_path):
    splits = load_medmnist(adrenal3d_path)
    assert splits.train.images.shape == (1188, 1, 28, 28, 28) and splits.image_size == (28, 28, 28)
    assert splits.n_classes == 2 and set(np.unique(splits.train.images)) == {0.0, 1.0}


def test_synthetic_volumes_carry_each_sites_scanner():
    spec = parse_spec(
        'name = "v"\n[data]\nsource = "synthetic"\nspatial_dims = 3\nimage_size = 16\nsites = 2\n'
        'train_samples = 16\nval_samples = 2\ntest_samples = 4\nmin_site_samples = 4\n[[scenario]]\nname = "p"\n', "t"
    ).spec
    data = spec.data.federated(0)
    assert data.image_size == (16, 16, 16) and data.sites[0].train.images.shape[1:] == (1, 16, 16, 16)
    lesions = data.train.images.reshape(len(data.train), -1).max(1)
    assert lesions[data.train.labels == 1].min() > lesions[data.train.labels == 0].max() - 0.3
    means = [site.train.images.mean() for site in data.sites]
    assert abs(means[0] - means[1]) > 1e-3  # different scanners


def test_a_volume_shows_as_three_orthogonal_slices():
    volume = np.zeros((4, 6, 8), np.float32)
    volume[2] = 1.0  # the axial slice in the middle of D is white
    picture = as_picture(volume)
    assert picture.shape == (6, 8 + 1 + 8 + 1 + 6)
    assert picture[:, :8].min() == 1.0  # axial: D's middle slice
    assert picture[:4, 9:17][2].min() == 1.0 and picture[:4, 9:17][0].max() == 0.0  # coronal: row 2 of D
    assert picture[4:, 9:17].min() == 1.0  # padding below the shorter slice is white


def test_a_2d_model_on_volumes_is_one_line_before_training(tmp_path, capsys):
    volumes = np.random.default_rng(0).integers(0, 256, size=(24, 6, 6, 6), dtype=np.uint8)
    path = write_medmnist(tmp_path / "v.npz", train_images=volumes, val_images=None, val_labels=None,
                          test_images=volumes[:6], train_labels=(np.arange(24) % 2)[:, None])
    spec = tmp_path / "s.toml"
    spec.write_text(
        f'name = "v"\n[data]\nsource = "medmnist"\npath = "{path}"\nsites = 2\n[model]\nname = "lenet-dlg"\n'
        '[[scenario]]\nname = "p"\n'
    )
    code, stdout, stderr = run_cli(["audit", spec, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, stdout, stderr, "model 'lenet-dlg' takes 2D input but the data are 3D volumes")
    assert not (tmp_path / "out" / "stages").exists()


SMALL_3D = """
name = "adrenal-small"
seed = 3
[data]
{data}
[federation]
rounds = 2
batch_size = 16
[[scenario]]
name = "plain"
protocol = "plain"
"""


@pytest.mark.slow
def test_nifti_datalists_give_the_npz_federation_and_its_utility(adrenal3d_path, tmp_path):
    npz_data = f'source = "medmnist"\npath = "{adrenal3d_path}"\nsites = 3\npartition = "dirichlet"\ntrain_subset = 150'
    npz_spec = tmp_path / "npz.toml"
    npz_spec.write_text(SMALL_3D.format(data=npz_data))
    with pytest.raises(SystemExit) as done:
        main(["sites", str(npz_spec), "--out", str(tmp_path / "sites")])
    assert done.value.code == 0
    # Each hospital's folder as it would hold it; the sites mix both datalist formats.
    datalists = ["site-0/datalist.csv", "site-1/dataset.json", "site-2/datalist.csv"]
    entries = "\n".join(
        f'[[data.site]]\nname = "site-{k}"\ndatalist = "{tmp_path / "sites" / d}"' for k, d in enumerate(datalists)
    )
    files_data = f'source = "files"\nwindow = [0, 1]\ncache_dir = "{tmp_path / "cache"}"\n{entries}'
    files_spec = tmp_path / "files.toml"
    files_spec.write_text(SMALL_3D.format(data=files_data))

    npz, files = (parse_spec(p.read_text(), str(p)) for p in (npz_spec, files_spec))
    assert npz.spec.data.federated(npz.spec.seed).sha256() == files.spec.data.federated(files.spec.seed).sha256()
    reports = [run_audit(loaded, tmp_path / name, device="cpu") for loaded, name in ((npz, "a"), (files, "b"))]
    # Same images, same split, same seed: the same training, float for float (two short rounds on
    # 150 volumes leave the model far from good; a model that ranks nothing would give 0.5 exactly).
    utilities = [report["scenarios"][0]["utility"] for report in reports]
    assert utilities[0] == utilities[1] and utilities[0]["auc"] != 0.5
    per_round = [[(r["auc"], r["accuracy"]) for r in report["scenarios"][0]["rounds"]] for report in reports]
    assert per_round[0] == per_round[1]
    for baseline in ("centralized", "local_only"):
        assert reports[0]["baselines"][baseline]["auc"] == reports[1]["baselines"][baseline]["auc"]
