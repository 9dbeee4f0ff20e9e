"""Pieces of small audit specs that run in seconds, shared by the audit tests."""

# Two small sites of 16-pixel synthetic images and DLG's LeNet: fast, and LeNet leaks.
TINY_DATA = """
[data]
source = "synthetic"
sites = 2
partition = "iid"
train_samples = 40
val_samples = 20
test_samples = 40
image_size = 16

[model]
name = "lenet-dlg"
"""

# FedAvg, three short rounds.
TINY_FEDAVG = """
[federation]
rounds = 3
batch_size = 8
"""

PLAIN_AND_CKKS = """
[[scenario]]
name = "plain"

[[scenario]]
name = "ckks"
protocol = "ckks"
"""


def tiny_spec(name: str, seed: int, *sections: str) -> str:
    """A spec on the tiny data, with ``sections`` (federation, scenarios, attacks, thresholds) after it."""
    return f'\nname = "{name}"\nseed = {seed}\n' + TINY_DATA + "".join(sections)
