"""Segmentation: its metrics on hand-computed masks, its loss, its training, its data and its attack signal."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from attacks.inversion.replay import soft_dice_cross_entropy
from attacks.membership.signals import scaled_confidence
from fedsecure.data.federated import FederatedData, SiteData
from fedsecure.data.medmnist import load_medmnist
from fedsecure.data.splits import Split
from fedsecure.data.synthetic import SyntheticPhantoms
from fedsecure.errors import DataError
from fedsecure.fl import TASKS, FedAvg, Federation, LocalTraining, ModelState, train_local
from fedsecure.fl.segmentation import dice_per_image, segmentation_utility, structure_confidence
from fedsecure.models import build_model
from fedsecure.seeding import torch_generator

SEGMENTATION = TASKS.get("segmentation")


def masks(*rows: str) -> torch.Tensor:
    """One mask from rows of digits: ``masks("0110", "0220")``."""
    return torch.tensor([[int(c) for c in row] for row in rows])


def test_dice_per_class_matches_the_hand_computed_values():
    truth = torch.stack([masks("0110", "0220"), masks("0110", "0000")])
    predicted = torch.stack([masks("0100", "0222"), masks("0110", "0000")])
    dice = dice_per_image(predicted, truth, 3)
    # Image 0: class 1 shares 1 of (2 true + 1 predicted) pixels, 2/3; class 2 shares 2 of (2 + 3), 4/5.
    # Image 1: class 1 exact; class 2 absent from the truth, so it does not count (NaN).
    assert torch.allclose(dice[0], torch.tensor([2 / 3, 4 / 5], dtype=torch.float64))
    assert dice[1, 0] == 1.0 and math.isnan(dice[1, 1])
    utility = segmentation_utility(predicted, truth, 3)
    assert utility.dice_per_class == pytest.approx(((2 / 3 + 1) / 2, 4 / 5))
    assert utility.dice == pytest.approx(((2 / 3 + 1) / 2 + 4 / 5) / 2)
    assert utility.accuracy == pytest.approx(14 / 16) and utility.auc is None and utility.n == 2


def test_hd95_is_the_distance_between_single_voxel_structures_and_a_missed_structure_is_counted():
    truth, predicted = torch.zeros(2, 9, 9, dtype=torch.long), torch.zeros(2, 9, 9, dtype=torch.long)
    truth[0, 2, 2], predicted[0, 2, 5] = 1, 1  # 3 voxels apart
    truth[1, 4, 4] = 1  # the prediction misses it: HD95 is undefined there, and counted apart
    utility = segmentation_utility(predicted, truth, 2)
    assert utility.hd95 == pytest.approx(3.0)
    assert utility.missed_structures == 1 and utility.spurious_structures == 0
    predicted[1, 4, 4], predicted[1, 0, 0] = 1, 0
    no_structure = torch.zeros(1, 9, 9, dtype=torch.long)
    # A structure where the truth has none: no Dice, no HD95 for it, but counted as spurious.
    assert segmentation_utility(predicted[:1], no_structure, 2).spurious_structures == 1
    assert segmentation_utility(truth, truth, 2).hd95 == 0.0


def test_the_replayed_loss_is_monais_dice_ce_on_one_hot_masks():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, generator=generator)
    truth = torch.randint(0, 3, (2, 6, 5), generator=generator)
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, truth.unsqueeze(1))
    one_hot = torch.nn.functional.one_hot(truth, 3).movedim(-1, 1).float()
    assert torch.allclose(soft_dice_cross_entropy(logits, one_hot), expected, atol=1e-6)
    assert torch.allclose(SEGMENTATION.loss(logits, truth), expected)


def test_the_structure_confidence_weights_structure_and_background_equally():
    # Two classes, logits (0, z): the confidence of class 1 is z, of class 0 is -z.
    z = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    logits = torch.stack([torch.zeros_like(z), z], dim=1)
    mask = torch.tensor([[[1, 0], [0, 0]]])
    # Structure: 1 (one voxel); background: mean of -2, -3, -5; the two halves averaged.
    expected = 0.5 * (1.0 + (-2 - 3 - 5) / 3)
    assert structure_confidence(logits, mask).item() == pytest.approx(expected)
    attack = SEGMENTATION.attack_logits(logits.double(), mask)
    assert scaled_confidence(attack, torch.ones(1, dtype=torch.long)).item() == pytest.approx(expected)


def _phantom_sites(n_sites: int, n_train: int = 12, size: int = 16, seed: int = 0) -> FederatedData:
    pooled = SyntheticPhantoms(seed=seed, train_samples=n_sites * n_train, val_samples=0,
                               test_samples=4 * n_sites, image_size=size, masks=True).load()
    sites = [
        SiteData(f"site-{k}", pooled.train.subset(np.arange(k * n_train, (k + 1) * n_train)),
                 pooled.test.subset(np.arange(4 * k, 4 * k + 4)))
        for k in range(n_sites)
    ]
    return FederatedData(sites=sites, n_classes=3, in_channels=1, image_size=(size, size))


def test_a_one_site_one_step_segmentation_federation_is_one_centralized_step():
    data = _phantom_sites(1)
    training = LocalTraining(epochs=1, batch_size=64, lr=0.1, task="segmentation")  # one batch: one step
    federated = Federation(data, build_model("unet", 1, 3, (16, 16), seed=4), FedAvg(), training=training,
                           rounds=1, evaluate_every=0).run()
    model = build_model("unet", 1, 3, (16, 16), seed=4)
    steps = train_local(model, *data.sites[0].train.tensors(), training, torch_generator(0, "train", 0, 1))
    assert steps == 1
    centralized = ModelState(model).get()
    assert not torch.equal(centralized, ModelState(build_model("unet", 1, 3, (16, 16), seed=4)).get())
    torch.testing.assert_close(ModelState(federated.released_model).get(), centralized, rtol=1e-5, atol=1e-6)


def test_membership_signals_separate_planted_members():
    # Noise images with random masks: no model can predict a mask from its image, so a model fits
    # only the masks it trained on, and the signal must tell those (members) from the others.
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(16, 1, 16, 16, generator=generator)
    truth = torch.randint(0, 2, (16, 16, 16), generator=generator)
    members = torch.arange(16) < 8
    model = build_model("unet", 1, 2, (16, 16), seed=0)
    training = LocalTraining(epochs=60, batch_size=8, lr=0.01, optimizer="adam", task="segmentation")
    train_local(model, images[members], truth[members], training, torch_generator(0, "toy"))
    signal = scaled_confidence(SEGMENTATION.sample_logits(model, images, truth), torch.ones(16, dtype=torch.long))
    inside, outside = signal[members], signal[~members]
    assert inside.min() > outside.max()  # AUC 1 on this toy: every member above every non-member


def test_masks_load_from_a_medmnist_style_file_and_bad_masks_are_named(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 3, (6, 8, 8), dtype=np.uint8)
    path = tmp_path / "seg.npz"
    np.savez(path, train_images=images[:4], train_masks=labels[:4], test_images=images[4:], test_masks=labels[4:])
    splits = load_medmnist(path, masks=True)
    assert splits.train.labels.shape == (4, 8, 8) and splits.n_classes == 3
    assert splits.train.labels.dtype == np.int64 and splits.val.labels.shape == (0, 8, 8)
    with pytest.raises(DataError, match="missing array\\(s\\) train_labels"):
        load_medmnist(path)  # a classification read of a segmentation file
    np.savez(path, train_images=images[:4], train_masks=labels[:4, :4], test_images=images[4:], test_masks=labels[4:])
    with pytest.raises(DataError, match="train_masks has shape \\(4, 4, 8\\); expected one mask per image"):
        load_medmnist(path, masks=True)


def test_synthetic_masks_mark_tissue_and_lesions_and_leave_the_classification_images_unchanged():
    segmentation = SyntheticPhantoms(train_samples=8, val_samples=0, test_samples=2, image_size=32, masks=True).load()
    classification = SyntheticPhantoms(train_samples=8, val_samples=0, test_samples=2, image_size=32).load()
    assert np.array_equal(segmentation.train.images, classification.train.images)
    assert segmentation.n_classes == 3 and set(np.unique(segmentation.train.labels)) == {0, 1, 2}
    lesion = segmentation.train.labels == 2
    # A lesion is brighter than any tissue; images without one (class 0) have no lesion voxel.
    assert segmentation.train.images[:, 0][lesion].min() >= 0.8
    assert not lesion[classification.train.labels == 0].any()


def test_canary_masks_are_always_another_images_even_where_images_share_a_mask():
    masks = np.zeros((5, 4, 4), np.int64)
    masks[2, 0, 0] = masks[3, 1, 1] = masks[4, 2, 2] = 1  # two empty masks, three different ones
    for seed in range(20):
        wrong = SEGMENTATION.mislabel(masks, 2, np.random.default_rng(seed))
        assert all(not np.array_equal(w, m) for w, m in zip(wrong, masks, strict=True))
        assert sorted(w.sum() for w in wrong) == sorted(m.sum() for m in masks)  # the same masks, reassigned


def test_a_split_refuses_masks_of_another_size():
    with pytest.raises(ValueError, match="masks of size"):
        Split(np.zeros((2, 1, 8, 8), np.float32), np.zeros((2, 8, 4), np.int64))


def _nifti(path, array) -> str:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(array), affine=np.eye(4)), path)
    return path.name


def test_datalist_masks_go_through_the_images_spatial_steps_and_bad_masks_are_named(tmp_path):
    from fedsecure.data.files import PooledDatalist
    from fedsecure.data.image_files import Preprocessing

    rng = np.random.default_rng(0)
    rows = ["image,label,split"]
    for i, shape in enumerate([(6, 7, 5), (8, 6, 6), (7, 7, 7), (6, 6, 6)]):
        mask = np.zeros(shape, np.uint8)
        mask[2:4, 2:4, 2:4] = 1 + i % 2  # a 2x2x2 structure, inside every crop
        image = _nifti(tmp_path / f"image-{i}.nii.gz", rng.random(shape, dtype=np.float32))
        label = _nifti(tmp_path / f"mask-{i}.nii.gz", mask)
        rows.append(f"{image},{label},{'test' if i == 3 else 'train'}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    source = PooledDatalist(tmp_path / "list.csv", Preprocessing(size=(8, 8, 8)), masks=True)
    splits = source.load()
    assert splits.train.images.shape == (3, 1, 8, 8, 8) and splits.train.labels.shape == (3, 8, 8, 8)
    assert splits.n_classes == 3 and splits.train.labels.dtype == np.int64
    assert sorted(int((m > 0).sum()) for m in splits.train.labels) == [8, 8, 8]  # padded, never interpolated
    resized = PooledDatalist(tmp_path / "list.csv", Preprocessing(size=(12, 12, 12), size_mode="resize"),
                             masks=True).load()
    assert set(np.unique(resized.train.labels)) <= {0, 1, 2}  # nearest neighbour: still classes

    _nifti(tmp_path / "mask-0.nii.gz", np.zeros((5, 5, 5), np.uint8))
    with pytest.raises(DataError, match="mask-0.nii.gz: a mask of shape 5x5x5"):
        PooledDatalist(tmp_path / "list.csv", Preprocessing(), masks=True).load()
    _nifti(tmp_path / "mask-0.nii.gz", np.full((6, 7, 5), 0.5, np.float32))
    with pytest.raises(DataError, match="mask values are not classes"):
        PooledDatalist(tmp_path / "list.csv", Preprocessing(size=(8, 8, 8)), masks=True).load()
    (tmp_path / "list.csv").write_text("image,label\nimage-1.nii.gz,missing.nii.gz\n")
    with pytest.raises(DataError, match="missing.nii.gz, which does not exist"):
        PooledDatalist(tmp_path / "list.csv", masks=True).load()


TINY_SEGMENTATION = """
name = "tiny-segmentation"
seed = 0
[data]
source = "synthetic"
task = "segmentation"
sites = 2
train_samples = 48
val_samples = 8
test_samples = 16
image_size = 16
min_site_samples = 4
[model]
name = "unet"
[federation]
rounds = 2
batch_size = 8
lr = 0.01
optimizer = "adam"
[[scenario]]
name = "plain"
[[scenario]]
name = "ckks"
protocol = "ckks"
[attacks.inversion]
method = "fedavg_update"
images = 1
batch_size = 1
iterations = 5
restarts = 1
positions = ["server"]
[attacks.membership]
method = "loss"
"""


def test_a_segmentation_audit_reports_dice_recovers_masks_and_reads_membership(tmp_path, capsys):
    from tests.fedsecure.test_bad_input import run_cli

    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_SEGMENTATION)
    code, stdout, stderr = run_cli(["audit", spec, "--out", tmp_path / "out"], capsys)
    assert code == 0, stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["metric"] == "dice" and report["spec"]["data"]["task"] == "segmentation"
    plain, ckks = report["scenarios"]
    assert 0 <= plain["utility"]["dice"] <= 1 and len(plain["utility"]["dice_per_class"]) == 2
    assert plain["utility"]["auc"] is None and ckks["utility"]["dice"] == pytest.approx(plain["utility"]["dice"])
    assert report["baselines"]["centralized"]["dice"] is not None and report["baselines"]["local_only"]["dice"]
    inversion = next(a for a in plain["attacks"] if a["attack"] == "inversion")
    assert inversion["status"] == "ok" and 0 <= inversion["mask_dice"] <= 1 and 0 <= inversion["prior_mask_dice"] <= 1
    assert next(a for a in ckks["attacks"] if a["attack"] == "inversion")["status"] == "no_access"
    membership = [a for a in plain["attacks"] if a["attack"] == "membership"]
    assert {a["position"] for a in membership} == {"external", "server", "client"}
    assert all(a["status"] == "ok" and 0 <= a["auc"] <= 1 for a in membership)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| model | Dice | Dice per structure | HD95 (voxels) | missed structures | spurious structures |" in markdown
    assert "| scenario | protection | Dice | accuracy |" in markdown and "Dice" in stdout
    assert plain["utility"]["spurious_structures"] >= 0
    assert plain["utility"]["examples"] == "figures/segmentation-plain.png"
    assert "fig-segmentation-plain" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.parametrize(("old", "new", "argv", "message"), [
    ('name = "unet"', 'name = "cnn"', [],
     "model 'cnn' gives outputs of shape (3,) per image; segmentation needs 3 logits per pixel"),
    ("", "", ["--engine", "flower"], "data.task = 'segmentation': on Flower no prediction leaves a site"),
    ('task = "segmentation"', 'task = "detection"', [], "unknown task 'detection'"),
    ("sites = 2", 'sites = 2\npartition = "dirichlet"', [], "partition 'dirichlet' skews the classes each site"),
])
def test_a_segmentation_spec_the_model_or_engine_cannot_run_is_one_line(old, new, argv, message, tmp_path, capsys):
    from tests.fedsecure.test_bad_input import assert_one_line_error, run_cli

    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_SEGMENTATION.replace(old, new) if old else TINY_SEGMENTATION)
    code, stdout, stderr = run_cli(["audit", spec, "--out", tmp_path / "out", *argv], capsys)
    assert_one_line_error(code, stdout, stderr, message)
    assert not (tmp_path / "out").exists()


def _private_unet(mode: str, clip: float, noise: float):
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from fedsecure.fl.segmentation import DiceCE

    generator = torch.Generator().manual_seed(2)
    images = torch.rand(4, 1, 12, 12, generator=generator)
    images[0] *= 1e4  # one image whose gradient dwarfs the others'
    truth = torch.randint(0, 3, (4, 12, 12), generator=generator)
    model = build_model("unet", 1, 3, (12, 12), seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = DataLoader(TensorDataset(images, truth), batch_size=4)
    wrapped = PrivacyEngine().make_private(
        module=model, optimizer=optimizer, data_loader=loader, criterion=DiceCE(), noise_multiplier=noise,
        max_grad_norm=clip, grad_sample_mode=mode, poisson_sampling=False,
    )
    criterion = wrapped[2] if len(wrapped) == 4 else DiceCE()
    return wrapped[0], wrapped[1], criterion, images, truth, model


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_dp_sgd_clips_each_image_of_a_unet_in_every_clipping_mode(mode):
    # Noise off, clip 1e-3: one step moves the weights by at most lr * clip (the mean of 4 clipped gradients),
    # however large one image's gradient; a loss that ignored ghost clipping's per-image reduction would not.
    model, optimizer, criterion, images, truth, inner = _private_unet(mode, clip=1e-3, noise=0.0)
    before = ModelState(inner).get()
    optimizer.zero_grad()
    criterion(model(images), truth).backward()
    optimizer.step()
    moved = (ModelState(inner).get() - before).norm()
    assert 0 < moved <= 1e-3 * (1 + 1e-4)


def test_opacus_per_sample_gradients_of_a_unet_are_each_images_own():
    from fedsecure.fl.segmentation import DiceCE

    model, optimizer, criterion, images, truth, inner = _private_unet("hooks", clip=1e9, noise=0.0)
    optimizer.zero_grad()
    criterion(model(images), truth).backward()
    for i in (0, 2):
        reference = build_model("unet", 1, 3, (12, 12), seed=0)
        DiceCE()(reference(images[i : i + 1]), truth[i : i + 1]).backward()
        for (name, parameter), own in zip(inner.named_parameters(), reference.parameters(), strict=True):
            assert parameter.grad_sample is not None, name  # every layer, those Opacus runs through functorch too
            torch.testing.assert_close(parameter.grad_sample[i], own.grad, rtol=1e-4, atol=1e-6 * (1 + 1e4 * (i == 0)))


def test_an_empty_poisson_batch_is_a_noise_only_step_on_a_unet():
    from fedsecure.privacy.sample_level import _empty_batch_gradients

    _, optimizer, _, _, _, inner = _private_unet("hooks", clip=1.0, noise=0.0)
    before = ModelState(inner).get()
    optimizer.zero_grad()
    _empty_batch_gradients(optimizer)
    optimizer.step()  # no forward pass: the UNet's functorch layers cannot take an empty batch
    assert torch.equal(ModelState(inner).get(), before)  # no noise, no sample: nothing moves
    _, noisy, _, _, _, inner = _private_unet("hooks", clip=1.0, noise=1.0)
    before = ModelState(inner).get()
    noisy.zero_grad()
    _empty_batch_gradients(noisy)
    noisy.step()
    assert not torch.equal(ModelState(inner).get(), before)  # the noise alone


def test_expanded_weights_is_refused_on_a_unet_in_one_line():
    from fedsecure.errors import NotSupportedError
    from fedsecure.privacy import SampleLevelDP

    mechanism = SampleLevelDP(epsilon=8.0, delta=1e-4, grad_sample_mode="ew")
    with pytest.raises(NotSupportedError, match="cannot differentiate ConvTranspose2d, PReLU per sample"):
        mechanism.prepare_model(build_model("unet", 1, 3, (16, 16)))


@pytest.mark.slow
def test_the_hippocampus_spec_federates_the_real_mri_and_a_3d_unet_learns_it(hippocampus_datalist, tmp_path):
    # The shipped spec's preprocessing and model on 36 of the subjects (absolute paths in a datalist of
    # its own), one FedAvg round; the spec's full run is the README's table.
    from pathlib import Path

    from fedsecure.config.spec import parse_spec

    decathlon = json.loads(hippocampus_datalist.read_text())
    folder = hippocampus_datalist.parent
    decathlon["training"] = [
        {key: str((folder / item[key]).resolve()) for key in ("image", "label")} for item in decathlon["training"][:36]
    ]
    (tmp_path / "dataset.json").write_text(json.dumps(decathlon))
    shipped = (Path(__file__).parents[2] / "audits" / "hippocampus.toml").read_text()
    text = shipped[: shipped.index("[[scenario]]")].replace("rounds = 20", "rounds = 1")
    text = text.replace('"../../shared/data/hippocampus/dataset.json"', json.dumps(str(tmp_path / "dataset.json")))
    spec = parse_spec(text + '[[scenario]]\nname = "plain"\n', "test").spec
    data = spec.data.federated(spec.seed)
    assert data.image_size == (48, 64, 48) and data.n_classes == 3
    assert [s.n_train for s in data.sites] == [9, 8, 8] and sum(len(s.test) for s in data.sites) == 7
    for site in data.sites:  # every mask holds both structures, on its volume's grid
        assert site.train.labels.shape[1:] == (48, 64, 48)
        assert all(set(np.unique(mask)) == {0, 1, 2} for mask in site.train.labels)
    model = build_model(spec.model.name, data.in_channels, data.n_classes, data.image_size, spec.seed)
    training = spec.federation.local_training(spec.data.task)
    before = Federation(data, model, FedAvg(), training=training, rounds=1).evaluate(ModelState(model).get())
    after = Federation(data, model, FedAvg(), training=training, rounds=1).run().evaluation.global_
    assert after.dice is not None and len(after.dice_per_class) == 2 and after.n == 7
    # One round already moves the UNet off its start: the background is found (Dice comes later: round 8 in
    # the README's run), and the structures it marks lie nearer the true ones.
    assert after.accuracy > before.global_.accuracy + 0.3 and after.hd95 < before.global_.hd95


def test_client_level_dp_under_ckks_wraps_a_segmentation_federation_like_any_other():
    import warnings

    from fedsecure.privacy import ClientLevelDP
    from fedsecure.secure import CKKSAggregation

    data = _phantom_sites(3, n_train=8)
    training = LocalTraining(epochs=1, batch_size=8, lr=0.01, optimizer="adam", task="segmentation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the seeded-noise notice
        result = Federation(
            data, build_model("unet", 1, 3, (16, 16), seed=0), FedAvg(), training=training, rounds=2,
            protocol=CKKSAggregation(), privacy=ClientLevelDP(epsilon=8.0, delta=1e-3, clip=0.5, min_sites=3),
            evaluate_every=0,
        ).run()
    guarantee = result.trace.privacy
    assert guarantee is not None and guarantee.level == "client" and 0 < guarantee.epsilon <= 8.0
    assert result.evaluation.global_.dice is not None and result.evaluation.global_.n == 12
