"""One MedMNIST-format file per site, as a spec federates its data (what each hospital would hold)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsecure.data.splits import Split
from fedsecure.errors import OutputError


def write_site_files(spec, out_dir: Path) -> list[Path]:
    """Write ``site-K.npz`` (train, val, test splits) for every site of ``spec`` (an ``AuditSpec``).

    Images are stored as MedMNIST stores them, uint8: exact for MedMNIST
    sources; synthetic images are rounded to 8 bits.

    Raises:
        OutputError: ``out_dir`` exists (nothing is overwritten).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise OutputError(f"{out_dir} exists; choose a new directory (nothing was overwritten)")
    data = spec.data.federated(spec.seed)
    out_dir.mkdir(parents=True)
    paths = []
    for k, site in enumerate(data.sites):
        arrays = {}
        for name, split in (("train", site.train), ("val", site.val), ("test", site.test)):
            if split is not None and len(split):
                arrays.update(_medmnist_arrays(name, split))
        path = out_dir / f"site-{k}.npz"
        np.savez_compressed(path, **arrays)
        paths.append(path)
    return paths


def _medmnist_arrays(name: str, split: Split) -> dict[str, np.ndarray]:
    images = np.clip(np.rint(split.images * 255.0), 0, 255).astype(np.uint8)
    images = images[:, 0] if images.shape[1] == 1 else np.moveaxis(images, 1, -1)  # (N, H, W) or (N, H, W, 3)
    return {f"{name}_images": images, f"{name}_labels": split.labels.reshape(-1, 1).astype(np.int64)}
