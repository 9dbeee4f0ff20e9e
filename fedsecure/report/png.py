"""A grayscale PNG encoder for the report's image grids (zlib only, no imaging library).

The report needs one kind of figure from images: a grid of 8-bit grayscale
pictures. PNG's format for that is a header, zlib-compressed rows and a
trailer (RFC 2083), which is fewer lines than an imaging dependency.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_gray(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) image with values in [0, 1] (clipped), 8 bits per pixel."""
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) image, got shape {image.shape}")
    pixels = np.clip(np.rint(np.nan_to_num(image) * 255), 0, 255).astype(np.uint8)
    height, width = pixels.shape
    rows = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b"")


def as_picture(image: np.ndarray, gap: int = 1) -> np.ndarray:
    """An (H, W) picture of one channel: the image itself, or a volume's three orthogonal central slices.

    A volume shows as its central slices across its first, second and third
    axes side by side, on white, each padded at the bottom to the tallest.
    Which anatomical planes they are depends on the array's axis order (MedMNIST
    3D stores (D, H, W); MONAI reads NIfTI and DICOM in the files' (x, y, z)).
    """
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W) image or a (D, H, W) volume, got shape {image.shape}")
    depth, height, width = image.shape
    slices = [image[depth // 2], image[:, height // 2, :], image[:, :, width // 2]]
    tallest = max(s.shape[0] for s in slices)
    panel = np.ones((tallest, sum(s.shape[1] for s in slices) + gap * (len(slices) - 1)), dtype=np.float32)
    left = 0
    for piece in slices:
        panel[: piece.shape[0], left : left + piece.shape[1]] = piece
        left += piece.shape[1] + gap
    return panel


def image_grid(rows: list[list[np.ndarray]], scale: int = 3, gap: int = 2) -> np.ndarray:
    """Tile (H, W) images into one picture: ``rows[r][c]``, each upscaled ``scale`` times, on white."""
    height, width = rows[0][0].shape
    columns = max(len(r) for r in rows)
    cell_h, cell_w = height * scale + gap, width * scale + gap
    grid = np.ones((len(rows) * cell_h + gap, columns * cell_w + gap), dtype=np.float32)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            big = np.kron(image, np.ones((scale, scale), dtype=np.float32))
            top, left = gap + r * cell_h, gap + c * cell_w
            grid[top : top + height * scale, left : left + width * scale] = big
    return grid
