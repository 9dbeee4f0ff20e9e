"""A hospital's own files: datalists, MONAI's readers (NIfTI, DICOM, PNG), preprocessing, the cache, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from fedsecure.config.spec import load_spec, parse_spec
from fedsecure.data.datalist import read_datalist
from fedsecure.data.federated import SiteData
from fedsecure.data.image_files import Preprocessing, load_images
from fedsecure.data.site_files import write_nifti_site
from fedsecure.data.splits import Split
from tests.fedsecure.test_bad_input import assert_one_line_error, run_cli

DICOM_FILES = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
MR_SERIES = DICOM_FILES / "dicomdirtests" / "98892003" / "MR700"  # seven slices of one MR series
CT_SERIES = DICOM_FILES / "dicomdirtests" / "77654033" / "CT2"  # four slices of one CT series


def _volumes(n: int, size: int = 8, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, size, size, size), dtype=np.float32)
    return Split(images, np.arange(n) % 2)


@pytest.fixture
def hospital(tmp_path) -> Path:
    """A site folder as `fedsecure sites` writes it: NIfTI volumes, dataset.json and datalist.csv."""
    site = SiteData(name="a", train=_volumes(6), test=_volumes(2, seed=1), val=_volumes(2, seed=2))
    folder = tmp_path / "hospital-a"
    write_nifti_site(site, folder)
    return folder


@pytest.fixture
def hospital_b(tmp_path) -> Path:
    """A second hospital's folder, other patients."""
    site = SiteData(name="b", train=_volumes(6, seed=3), test=_volumes(2, seed=4), val=_volumes(2, seed=5))
    write_nifti_site(site, tmp_path / "hospital-b")
    return tmp_path / "hospital-b"


def _files_spec(tmp_path: Path, data: str) -> Path:
    spec = tmp_path / "files.toml"
    spec.write_text(
        'name = "files"\n[data]\nsource = "files"\nwindow = [0, 1]\ncache = false\n' + data
        + '\n[federation]\nrounds = 1\n[[scenario]]\nname = "plain"\nprotocol = "plain"\n'
    )
    return spec


def test_both_datalists_give_the_written_volumes_exactly(hospital, hospital_b):
    loaded = []
    for datalist in ("dataset.json", "datalist.csv"):
        spec = parse_spec(
            f'name = "x"\n[data]\nsource = "files"\nwindow = [0, 1]\ncache = false\n'
            f'[[data.site]]\nname = "a"\ndatalist = "{hospital / datalist}"\n'
            f'[[data.site]]\nname = "b"\ndatalist = "{hospital_b / datalist}"\n[[scenario]]\nname = "p"\n', "t"
        ).spec
        loaded.append(spec.data.federated(0))
    for data in loaded:
        assert data.spatial_dims == 3 and data.image_size == (8, 8, 8) and [s.name for s in data.sites] == ["a", "b"]
        np.testing.assert_array_equal(data.sites[0].train.images, _volumes(6).images)
        np.testing.assert_array_equal(data.sites[0].test.labels, _volumes(2, seed=1).labels)
        np.testing.assert_array_equal(data.sites[1].val.images, _volumes(2, seed=5).images)
    assert loaded[0].sha256() == loaded[1].sha256()


def test_images_without_a_split_are_split_by_class_with_the_seed(tmp_path, hospital):
    lines = ["image,label"] + [f"{p},{i % 2}" for i, p in enumerate(sorted((hospital / "images").glob("*.nii.gz")))]
    (tmp_path / "unsplit.csv").write_text("\n".join(lines) + "\n")
    spec = _files_spec(tmp_path, f'val_fraction = 0.2\ntest_fraction = 0.2\ndatalist = "{tmp_path / "unsplit.csv"}"'
                       '\nsites = 1\nmin_site_samples = 1')
    first, again = (parse_spec(spec.read_text(), "t").spec.data.federated(0) for _ in range(2))
    site = first.sites[0]
    assert (len(site.train), len(site.val), len(site.test)) == (6, 2, 2)
    assert sorted(site.test.labels.tolist()) == [0, 1] and sorted(site.val.labels.tolist()) == [0, 1]
    np.testing.assert_array_equal(site.train.images, again.sites[0].train.images)


def test_the_cache_gives_the_decoded_images_back_and_follows_the_file(tmp_path, hospital):
    paths = sorted((hospital / "images").glob("train-*.nii.gz"))
    cache = tmp_path / "cache"
    decoded = load_images(paths, Preprocessing(window=(0, 1)), cache, "a")
    assert len(list(cache.iterdir())) == len(paths)
    np.testing.assert_array_equal(load_images(paths, Preprocessing(window=(0, 1)), cache, "a"), decoded)
    shutil.copy(paths[1], paths[0])  # an edited file is decoded afresh, never served from the cache
    np.testing.assert_array_equal(load_images(paths, Preprocessing(window=(0, 1)), cache, "a")[0], decoded[1])
    assert len(list(cache.iterdir())) == len(paths) + 1


def test_preprocessing_brings_mixed_sizes_to_one(tmp_path):
    import nibabel as nib

    paths = []
    for i, shape in enumerate([(10, 12, 9), (7, 8, 8)]):
        paths.append(tmp_path / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.full(shape, 100.0 * (i + 1), np.float32), np.eye(4)), paths[-1])
    for mode in ("crop_pad", "resize"):
        images = load_images(paths, Preprocessing(window=(0, 200), size=(8, 8, 8), size_mode=mode), None, "a")
        assert images.shape == (2, 1, 8, 8, 8)
        assert images[1].max() == 1.0 and images[0].max() == pytest.approx(0.5)


def test_dicom_files_and_series_folders_load_through_monai():
    ct = load_images([DICOM_FILES / "CT_small.dcm"], Preprocessing(window=(-1000, 400)), None, "a")
    assert ct.shape == (1, 1, 128, 128) and 0 <= ct.min() < ct.max() <= 1
    mr = load_images([DICOM_FILES / "MR_small.dcm"], Preprocessing(), None, "a")
    assert mr.shape == (1, 1, 64, 64)
    series = load_images([MR_SERIES], Preprocessing(), None, "a")
    assert series.shape == (1, 1, 16, 16, 7)
    two = load_images([MR_SERIES, CT_SERIES], Preprocessing(size=(16, 16, 8)), None, "a")
    assert two.shape == (2, 1, 16, 16, 8)


def test_png_images_load_with_the_pil_reader(tmp_path):
    from PIL import Image

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"x{i}.png")
        Image.fromarray(np.full((12, 10), 60 * (i + 1), np.uint8)).save(paths[-1])
    images = load_images(paths, Preprocessing(window=(0, 255)), None, "a")
    assert images.shape[:2] == (2, 1) and sorted(images.shape[2:]) == [10, 12]
    assert images[1].max() == pytest.approx(120 / 255)


def test_a_datalist_entry_names_its_row(tmp_path, hospital):
    entries = read_datalist(hospital / "dataset.json", "a")
    assert entries[0].row == "training[0]" and entries[0].split == "train" and entries[0].image.is_absolute()
    assert read_datalist(hospital / "datalist.csv", "a")[0].row == "line 2"


def _bad_cases(tmp_path: Path, hospital: Path, good: Path) -> list[tuple[str, str]]:
    """(spec [data] lines, expected message) for malformed datalists and files; ``good`` is the other site's."""
    images = sorted((hospital / "images").glob("train-*.nii.gz"))

    test_image = sorted((hospital / "images").glob("test-*.nii.gz"))[0]

    def csv(name: str, *rows: str, header: str = "image,label,split", test: bool = True) -> Path:
        # Each bad site also holds a good test image unless the case is about its test split.
        path = tmp_path / name
        path.write_text("\n".join([header, *rows, *([f"{test_image},1,test"] if test else [])]) + "\n")
        return path

    def sites(first: Path, second: Path = good) -> str:
        return f'[[data.site]]\nname = "a"\ndatalist = "{first}"\n[[data.site]]\nname = "b"\ndatalist = "{second}"'

    text_file = tmp_path / "notes.nii.gz"
    text_file.write_text("not an image")
    nested = tmp_path / "nested-series"
    shutil.copytree(MR_SERIES, nested)
    (nested / "inner").mkdir()
    two_series = tmp_path / "two-series"
    two_series.mkdir()
    shutil.copy(DICOM_FILES / "CT_small.dcm", two_series / "1.dcm")
    shutil.copy(DICOM_FILES / "MR_small.dcm", two_series / "2.dcm")
    flat = tmp_path / "flat.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), flat)
    flat_test = tmp_path / "flat-test.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), flat_test)
    bigger = tmp_path / "bigger.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((9, 8, 8), np.float32), np.eye(4)), bigger)
    (tmp_path / "broken.json").write_text("{ not json")
    (tmp_path / "no-training.json").write_text('{"name": "x", "validation": []}')
    (tmp_path / "classes.json").write_text(json.dumps(
        {"labels": {"0": "normal", "1": "hyperplasia"}, "training": [{"image": str(images[0]), "label": 2}]}
    ))
    (tmp_path / "list.txt").write_text("image,label\n")
    return [
        (sites(tmp_path / "absent.csv"), "site 'a': " + str(tmp_path / "absent.csv") + ": no such datalist"),
        (sites(csv("missing.csv", f"{tmp_path / 'gone.nii.gz'},0,train")), "gone.nii.gz, which does not exist"),
        (sites(csv("text.csv", f"{text_file},0,train", f"{images[1]},1,train")),
         "notes.nii.gz: not a readable image (File"),  # nibabel's own reason, not MONAI's "no suitable reader"
        (sites(csv("word.csv", f"{images[0]},abc,train")), "label 'abc' is not a class"),
        (sites(csv("mask.csv", f"{images[0]},labelsTr/x.nii.gz,train")), "segmentation masks are not classes"),
        (sites(csv("negative.csv", f"{images[0]},-1,train")), "label -1 is negative"),
        (sites(tmp_path / "classes.json"), "label 2 is not one of the datalist's classes (0, 1)"),
        (sites(csv("sizes.csv", f"{images[0]},0,train", f"{bigger},1,train")),
         "size 9x8x8, but train-00000.nii.gz is 8x8x8; set data.size"),
        (sites(csv("dims.csv", f"{images[0]},0,train", f"{flat},1,train")), "a 2D image among 3D ones"),
        (sites(csv("no-train.csv", f"{images[0]},0,test", f"{images[1]},1,val")), "no training images"),
        (sites(csv("series.csv", f"{two_series},0,train")), "the folder holds 2 DICOM series"),
        (sites(csv("header.csv", f"{images[0]}", header="image")), "the CSV header lacks column(s) label"),
        (sites(csv("split.csv", f"{images[0]},0,holdout")), "has split 'holdout'; expected one of train, val, test"),
        (sites(tmp_path / "broken.json"), "not a readable JSON datalist"),
        (sites(tmp_path / "no-training.json"), "needs a 'training' list"),
        (sites(csv("twice.csv", f"{images[0]},0,train", f"{images[0]},0,train")), "lists " + str(images[0]) + " again"),
        (sites(tmp_path / "list.txt"), "a datalist is a Decathlon .json or a .csv file, not '.txt'"),
        (sites(csv("txt.csv", f"{tmp_path / 'list.txt'},0,train")), "not a NIfTI, DICOM or PNG/JPEG/BMP image"),
        ("size = [8, 8]\n" + sites(csv("wrong-size.csv", f"{images[0]},0,train", f"{images[1]},1,train")),
         "decodes to a 3D image of size 8x8x8, but the preprocessing failed on it"),
        (sites(csv("shared.csv", f"{images[0]},0,train", f"{images[1]},1,train"), hospital / "datalist.csv"),
         "which site 'a' lists too; a patient's image belongs to one hospital"),
        (sites(csv("no-test-a.csv", f"{images[0]},0,train", f"{images[1]},1,val", test=False)),
         "no-test-a.csv: no test images (mark some split = test, or raise test_fraction)"),
        (sites(csv("nested.csv", f"{nested},0,train")), "holds folder(s) inner; a series folder holds files"),
        (sites(csv("flat.csv", f"{flat},0,train", f"{flat_test},1,test", test=False)),
         "site 'b': images of shape 1x8x8x8 (channels first), but site 'a'"),
    ]


def test_at_least_twelve_malformed_datalists_and_files_are_one_line_and_exit_2(tmp_path, hospital, hospital_b, capsys):
    cases = _bad_cases(tmp_path, hospital, hospital_b / "datalist.csv")
    assert len(cases) >= 12
    for i, (data, message) in enumerate(cases):
        spec = _files_spec(tmp_path, data)
        out = tmp_path / f"out-{i}"
        code, stdout, stderr = run_cli(["audit", spec, "--out", out], capsys)
        assert_one_line_error(code, stdout, stderr, message)
        assert not (out / "report.json").exists()


def test_a_supernode_reads_its_datalist_with_the_specs_preprocessing(tmp_path, hospital):
    from fedsecure.flower.site_side import from_node_config

    spec = parse_spec(
        f'name = "x"\n[data]\nsource = "files"\nwindow = [0, 1]\ncache = false\n'
        f'datalist = "{hospital / "datalist.csv"}"\nsites = 1\n[[scenario]]\nname = "p"\n', "t"
    ).spec
    site = from_node_config({"data-path": str(hospital / "dataset.json")}).data(3, spec)
    assert site.name == "site-3" and len(site.train) == 6 and len(site.val) == 2 and len(site.test) == 2
    np.testing.assert_array_equal(site.train.images, _volumes(6).images)


def test_a_supernode_refuses_a_datalist_when_the_spec_does_not_say_how_to_preprocess_it(hospital):
    from fedsecure.errors import FedsecureError
    from fedsecure.flower.site_side import from_node_config

    spec = parse_spec('name = "x"\n[[scenario]]\nname = "p"\n', "t").spec
    with pytest.raises(FedsecureError, match="is a datalist but the spec's data.source is 'synthetic'"):
        from_node_config({"data-path": str(hospital / "dataset.json")}).data(0, spec)


def test_relative_paths_resolve_against_the_spec_and_the_datalist(tmp_path, hospital, hospital_b, monkeypatch):
    # A Decathlon item named "split": "train" beside a train/ folder stays a split, not a path.
    (hospital / "train").mkdir()
    spec = hospital.parent / "specs" / "files.toml"
    spec.parent.mkdir()
    spec.write_text(
        'name = "rel"\n[data]\nsource = "files"\nwindow = [0, 1]\ncache = false\n'
        '[[data.site]]\nname = "a"\ndatalist = "../hospital-a/dataset.json"\n'
        '[[data.site]]\nname = "b"\ndatalist = "../hospital-b/datalist.csv"\n[[scenario]]\nname = "p"\n'
    )
    monkeypatch.chdir(hospital.parent)
    data = load_spec(Path("specs/files.toml")).spec.data.federated(0)
    assert [len(site.train) for site in data.sites] == [6, 6]


def test_a_spreadsheet_csv_with_a_byte_order_mark_reads(tmp_path, hospital):
    text = (hospital / "datalist.csv").read_text()
    (hospital / "bom.csv").write_text("\ufeff" + text, encoding="utf-8")
    assert len(read_datalist(hospital / "bom.csv", "a")) == 10


def test_a_dicom_folder_skips_hidden_and_non_image_files(tmp_path):
    folder = tmp_path / "series"
    shutil.copytree(MR_SERIES, folder)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "notes.txt").write_text("scanner log")
    assert load_images([folder], Preprocessing(), None, "a").shape == (1, 1, 16, 16, 7)


def test_a_volume_too_small_for_the_model_is_one_line_before_training(tmp_path, capsys):
    import nibabel as nib

    rows = ["image,label,split"]
    for i in range(4):
        nib.save(nib.Nifti1Image(np.full((8, 8, 1), i, np.float32), np.eye(4)), tmp_path / f"s{i}.nii.gz")
        rows.append(f"s{i}.nii.gz,{i % 2},{'test' if i == 3 else 'train'}")
    (tmp_path / "slices.csv").write_text("\n".join(rows) + "\n")
    spec = _files_spec(tmp_path, f'datalist = "{tmp_path / "slices.csv"}"\nsites = 1\nmin_site_samples = 1')
    code, stdout, stderr = run_cli(["audit", spec, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, stdout, stderr, "cannot take images of 1 channel(s) and size 8x8x1")
    assert not (tmp_path / "out" / "stages").exists()


def test_a_supernode_names_its_site_as_the_audit_does_and_caches_where_the_hospital_says(
    tmp_path, hospital, hospital_b
):
    from fedsecure.errors import FedsecureError
    from fedsecure.flower.site_side import from_node_config

    images = sorted((hospital_b / "images").glob("*.nii.gz"))
    lines = ["image,label"] + [f"{p},{i % 2}" for i, p in enumerate(images)]
    (tmp_path / "unsplit.csv").write_text("\n".join(lines) + "\n")
    spec = parse_spec(
        f'name = "x"\n[data]\nsource = "files"\nwindow = [0, 1]\ncache_dir = "{tmp_path / "server-chosen"}"\n'
        f'[[data.site]]\nname = "first"\ndatalist = "{hospital / "datalist.csv"}"\n'
        f'[[data.site]]\nname = "hospital-b"\ndatalist = "{tmp_path / "unsplit.csv"}"\n[[scenario]]\nname = "p"\n', "t"
    ).spec
    audit_site = spec.data.federated(spec.seed).sites[1]  # the audit caches where its spec says
    audit_cached = sorted((tmp_path / "server-chosen").iterdir())
    node = {"data-path": str(tmp_path / "unsplit.csv"), "cache-dir": str(tmp_path / "hospital-cache")}
    with pytest.raises(FedsecureError, match="start this SuperNode with --node-config 'site=K'"):
        from_node_config(node).data(1, spec)  # the split's seed is the site's name: the site must say which it is
    site = from_node_config({**node, "site": 1}).data(1, spec)
    assert site.name == "hospital-b"
    np.testing.assert_array_equal(site.test.images, audit_site.test.images)
    assert len(list((tmp_path / "hospital-cache").iterdir())) == len(images)
    assert sorted((tmp_path / "server-chosen").iterdir()) == audit_cached
    assert oct((tmp_path / "hospital-cache").stat().st_mode & 0o777) == oct(0o700)
    uncached = from_node_config({**node, "site": 1, "cache-dir": ""}).data(1, spec)  # the hospital turns it off
    np.testing.assert_array_equal(uncached.test.images, site.test.images)
    assert len(list((tmp_path / "hospital-cache").iterdir())) == len(images)


def test_an_existing_cache_folder_others_can_read_is_made_owner_only(tmp_path, hospital):
    cache = tmp_path / "shared-cache"
    cache.mkdir(mode=0o755)
    cache.chmod(0o755)
    load_images(sorted((hospital / "images").glob("train-*.nii.gz"))[:1], Preprocessing(window=(0, 1)), cache, "a")
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)
