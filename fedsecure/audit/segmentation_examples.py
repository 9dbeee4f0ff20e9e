"""Example segmentations of a scenario's released model: image, true mask, predicted mask.

A Dice figure says how well a model segments on average; the examples show what
it gets wrong (a missed lesion, a structure spilling over its boundary). The
grid is written beside the report and embedded in the HTML page; it is drawn
from the auditor's own test images, which no attacker sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsecure.data.federated import FederatedData
from fedsecure.fl.evaluation import predict
from fedsecure.fl.task import Task
from fedsecure.report.output import write_atomic
from fedsecure.report.png import as_picture, encode_gray, image_grid

FIGURES = "figures"
#: Test images shown per scenario (the first of the pooled test set, the same for every scenario).
EXAMPLES = 4


def write_examples(
    task: Task, model: nn.Module, data: FederatedData, out_dir: Path, scenario: str, device: torch.device
) -> str | None:
    """The grid's path relative to ``out_dir``, or None where the task's labels are not masks.

    Rows: the images (first channel), their true masks, the model's masks; a mask's classes
    shade from black (background) to white (the last class). A volume shows its three
    orthogonal central slices.
    """
    if not task.masks:
        return None
    test = data.test
    shown = min(EXAMPLES, len(test))
    images = torch.from_numpy(test.images[:shown]).to(device)
    predicted = predict(model.to(device), images, task.eval_batch).argmax(1).cpu().numpy()
    top = max(data.n_classes - 1, 1)
    rows = [
        [as_picture(image[0]) for image in test.images[:shown]],
        [as_picture(mask.astype(np.float32) / top) for mask in test.labels[:shown]],
        [as_picture(mask.astype(np.float32) / top) for mask in predicted],
    ]
    relative = f"{FIGURES}/segmentation-{scenario}.png"
    write_atomic(out_dir / relative, encode_gray(image_grid(rows)))
    return relative
