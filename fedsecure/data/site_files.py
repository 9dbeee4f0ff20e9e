"""The files each hospital would hold, as a spec federates its data: a MedMNIST ``.npz`` and a NIfTI folder per site.

For every site ``K`` of the spec's federation, :func:`write_site_files` writes

* ``site-K.npz``: the site's train, val and test splits in the MedMNIST layout;
* ``site-K/``: one NIfTI file per image (``images/<split>-<n>.nii.gz``, float32,
  identity affine) with two datalists that list the same images: ``dataset.json``
  (Decathlon) and ``datalist.csv`` (``image,label,split``). Segmentation masks go
  to ``*_masks`` arrays and to ``labels/<split>-<n>.nii.gz``, which ``label`` names.

Either is a SuperNode's ``data-path``; the datalists are what a ``source = "files"``
spec reads (with ``window = [0, 1]``: the files hold the intensities as trained on).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from fedsecure.data.federated import SiteData
from fedsecure.data.splits import Split
from fedsecure.errors import OutputError


def write_site_files(spec, out_dir: Path) -> list[Path]:
    """Write ``site-K.npz`` and the ``site-K/`` NIfTI folder for every site of ``spec`` (an ``AuditSpec``).

    The ``.npz`` stores images as MedMNIST stores them, uint8: exact for MedMNIST
    sources; synthetic images are rounded to 8 bits. The NIfTI files hold the
    float32 images exactly. Multi-channel (RGB) images get the ``.npz`` only.

    Returns:
        Each site's ``.npz``, in site order (its NIfTI folder, when written, is beside it: ``site-K/``).

    Raises:
        OutputError: ``out_dir`` exists (nothing is overwritten).
        DataError: the spec's data cannot be read.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise OutputError(f"{out_dir} exists; choose a new directory (nothing was overwritten)")
    data = spec.data.federated(spec.seed)
    if data.in_channels not in (1, 3):
        # MedMNIST files hold grayscale or RGB; any other channel count would read back as a volume.
        raise OutputError(f"the data have {data.in_channels} channels; MedMNIST-format files hold 1 or 3")
    out_dir.mkdir(parents=True)
    paths = []
    for k, site in enumerate(data.sites):
        arrays = {}
        for name, split in _splits(site):
            arrays.update(_medmnist_arrays(name, split))
        path = out_dir / f"site-{k}.npz"
        np.savez_compressed(path, **arrays)
        paths.append(path)
        if data.in_channels == 1:
            write_nifti_site(site, out_dir / f"site-{k}")
    return paths


def write_nifti_site(site: SiteData, folder: Path) -> None:
    """One NIfTI file per image of ``site`` under ``folder/images``, listed by ``dataset.json`` and ``datalist.csv``."""
    import nibabel as nib

    (folder / "images").mkdir(parents=True)
    masks = site.train.labels.ndim > 1
    if masks:
        (folder / "labels").mkdir()
    rows: list[dict] = []
    classes: set[int] = set()
    for name, split in _splits(site):
        for i, (image, label) in enumerate(zip(split.images, split.labels, strict=True)):
            relative = f"images/{name}-{i:05d}.nii.gz"
            nib.save(nib.Nifti1Image(np.asarray(image[0], dtype=np.float32), affine=np.eye(4)), folder / relative)
            if masks:  # the mask beside its image, on the same grid; the datalist's label names it
                mask = f"labels/{name}-{i:05d}.nii.gz"
                nib.save(nib.Nifti1Image(np.asarray(label, dtype=np.uint8), affine=np.eye(4)), folder / mask)
                rows.append({"image": relative, "label": mask, "split": name})
            else:
                rows.append({"image": relative, "label": int(label), "split": name})
            classes.update(int(c) for c in np.unique(label))
    decathlon = {
        "name": site.name, "description": "written by fedsecure sites",
        "tensorImageSize": f"{site.train.images.ndim - 2}D",
        "labels": {str(c): f"class {c}" for c in sorted(classes)},
        "numTraining": len(rows),
        "training": [{**row, "image": f"./{row['image']}", **({"label": f"./{row['label']}"} if masks else {})}
                     for row in rows],
    }
    (folder / "dataset.json").write_text(json.dumps(decathlon, indent=1))
    with (folder / "datalist.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)


def _splits(site: SiteData) -> list[tuple[str, Split]]:
    return [(name, split) for name, split in (("train", site.train), ("val", site.val), ("test", site.test))
            if split is not None and len(split)]


def _medmnist_arrays(name: str, split: Split) -> dict[str, np.ndarray]:
    images = np.clip(np.rint(split.images * 255.0), 0, 255).astype(np.uint8)
    images = images[:, 0] if images.shape[1] == 1 else np.moveaxis(images, 1, -1)  # (N, [D,] H, W) or (N, H, W, 3)
    if split.labels.ndim > 1:
        return {f"{name}_images": images, f"{name}_masks": split.labels.astype(np.uint8)}
    return {f"{name}_images": images, f"{name}_labels": split.labels.reshape(-1, 1).astype(np.int64)}
