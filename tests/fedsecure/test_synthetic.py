import numpy as np

from fedsecure.data import IID, Dirichlet, SyntheticPhantoms, federate


def small(seed=0):
    return SyntheticPhantoms(seed=seed, n_sites=3, train_samples=60, val_samples=6, test_samples=30)


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = (federate(small(s), 3, IID(), s) for s in (0, 0, 1))
    assert a.sha256() == b.sha256()
    assert a.sha256() != c.sha256()
    assert np.array_equal(a.sites[1].train.images, b.sites[1].train.images)


def test_label_is_in_the_image_content():
    # Lesions are brighter than any tissue: the brightest clean pixel separates the classes.
    clean = small().load().train
    brightest = clean.images.reshape(len(clean), -1).max(1)
    assert brightest[clean.labels == 1].min() >= 0.8 > 0.5 >= brightest[clean.labels == 0].max()
    assert clean.labels.mean() == 0.5


def test_each_site_has_its_own_scanner():
    source = small()
    scanners = [source.acquisition(k) for k in range(3)]
    assert len({s.gamma for s in scanners}) == 3
    data = federate(source, 3, IID(), 0)
    clean = source.load().train
    # Site images differ from the clean phantoms by the site's scanner, bounded to [0, 1].
    for site in data.sites:
        assert 0.0 <= site.train.images.min() and site.train.images.max() <= 1.0
    mean_background = [np.median(s.train.images) for s in data.sites]
    assert len(set(np.round(mean_background, 4))) == 3
    assert not np.array_equal(data.train.images, clean.images)


def test_federation_covers_all_test_samples_and_follows_the_partition():
    data = federate(small(), 3, Dirichlet(alpha=0.5, min_size=2), 0)
    assert sum(len(s.train) for s in data.sites) == 60
    assert len(data.test) == 30
    assert data.n_classes == 2 and data.in_channels == 1 and data.image_size == (28, 28)
