"""CKKS secure aggregation: exactness, the server's blindness, refusal of weak parameters."""

import numpy as np
import pytest
import tenseal as ts
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.errors import AggregationOverflowError, CKKSParametersError
from fedsecure.secure import DEFAULT_PRESET, PRESETS, CKKSAggregation, CKKSParameters, PlainAggregation
from fedsecure.secure.packing import n_chunks, pack, unpack

SLOTS = PRESETS[DEFAULT_PRESET].slots


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@st.composite
def rounds(draw):
    """Sites' updates (max entry 1e-3 .. 10), weights (1..100, i.e. up to 100x the smallest) and who drops out."""
    n = draw(st.integers(1, 5))
    length = draw(st.integers(1, 3 * SLOTS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    updates = []
    for _ in range(n):
        u = rng.uniform(-1, 1, length)
        u[rng.integers(length)] = 1.0  # the largest entry is exactly the magnitude below
        updates.append(u * 10 ** rng.uniform(-3, 1))
    weights = [float(w) for w in rng.integers(1, 101, n)]
    arrived = draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
    return updates, weights, arrived


@settings(max_examples=25, deadline=None)
@given(rounds())
def test_decrypted_mean_equals_the_plaintext_weighted_mean(data):
    updates, weights, arrived = data
    roles = CKKSAggregation().setup(len(updates), weight_unit=min(weights))
    messages = [
        roles.client.protect(torch.from_numpy(u), w) for u, w, a in zip(updates, weights, arrived, strict=True) if a
    ]
    aggregate = roles.server.combine(messages)
    revealed = roles.client.reveal(aggregate)
    got = revealed.double().numpy()
    kept = [(u, w) for u, w, a in zip(updates, weights, arrived, strict=True) if a]
    expected = sum(w * u for u, w in kept) / sum(w for _, w in kept)
    assert got.shape == expected.shape
    assert relative_error(got, expected) <= 1e-6
    assert all(len(m.payload) == n_chunks(len(updates[0]) + 1, SLOTS) for m in messages)
    # bit for bit what the plaintext protocol computes from the same float32 updates
    plain = PlainAggregation().setup(len(updates), weight_unit=min(weights))
    plain_messages = [
        plain.client.protect(torch.from_numpy(u).float(), w)
        for u, w, a in zip(updates, weights, arrived, strict=True)
        if a
    ]
    assert torch.equal(revealed, plain.client.reveal(plain.server.combine(plain_messages)))


def test_a_site_dropping_out_mid_round_leaves_the_weighted_mean_of_the_rest():
    rng = np.random.default_rng(0)
    updates = [torch.from_numpy(rng.normal(0, 0.05, 5000)) for _ in range(4)]
    weights = [195.0, 886.0, 501.0, 846.0]
    roles = CKKSAggregation().setup(4, weight_unit=195.0)  # key setup with all four sites
    messages = [roles.client.protect(u, w) for u, w in zip(updates, weights, strict=True)]
    del messages[2]  # site-2 dies after setup, before its message reaches the server
    got = roles.client.reveal(roles.server.combine(messages)).double()
    expected = (195 * updates[0] + 886 * updates[1] + 846 * updates[3]) / (195 + 886 + 846)
    assert relative_error(got.numpy(), expected.numpy()) <= 1e-6
    plain = PlainAggregation().setup(4, weight_unit=195.0)
    plain_messages = [
        plain.client.protect(u.float(), w) for u, w in zip(updates, weights, strict=True) if u is not updates[2]
    ]
    plain_mean = plain.client.reveal(plain.server.combine(plain_messages))
    assert torch.equal(got.float(), plain_mean)


def test_the_server_cannot_decrypt_or_encrypt():
    roles = CKKSAggregation().setup(2, weight_unit=1.0)
    assert not roles.server.context.is_private()
    assert roles.setup_bytes > 0
    message = roles.client.protect(torch.ones(10), 1.0)
    aggregate = roles.server.combine([message, roles.client.protect(torch.ones(10), 1.0)])
    for ciphertext in message.payload + aggregate.payload:
        vector = ts.ckks_vector_from(roles.server.context, ciphertext)
        with pytest.raises(ValueError, match="doesn't hold a secret_key"):
            vector.decrypt()
    with pytest.raises(ValueError, match="doesn't support encryption"):
        ts.ckks_vector(roles.server.context, [1.0])
    assert not message.plaintext and message.weight is None
    # the sites, holding the key, can
    assert roles.client.reveal(aggregate).tolist() == pytest.approx([1.0] * 10, abs=1e-6)


def test_server_refuses_a_context_with_the_secret_key():
    context = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[50, 40])
    from fedsecure.secure import CKKSServer

    with pytest.raises(CKKSParametersError, match="holding the secret key"):
        CKKSServer(context.serialize(save_secret_key=True))


@pytest.mark.parametrize(
    ("n", "bits", "scale", "message"),
    [
        (4096, (60, 60), 40, "120 bits with ring dimension 4096 is below 128-bit security \\(at most 109 bits\\)"),
        (8192, (60, 60, 60, 40), 40, "220 bits with ring dimension 8192 is below 128-bit security"),
        (2048, (30, 30), 20, "60 bits with ring dimension 2048"),
        (3000, (30, 20), 20, "ring dimension 3000 is not one of"),
        (4096, (61, 40), 40, "every prime must have 1-60 bits"),
        (4096, (50,), 40, "at least two primes"),
        (4096, (40, 40), 40, "leaves no room below the 40-bit data prime"),
    ],
)
def test_insecure_or_malformed_parameters_are_refused(n, bits, scale, message):
    with pytest.raises(CKKSParametersError, match=message):
        CKKSParameters(n, bits, scale)


# The HomomorphicEncryption.org standard's table (128-bit classical security, ternary secret), copied here
# independently of fedsecure.secure.ckks_params: the largest total coefficient-modulus bits per ring dimension.
HE_STANDARD_128 = {4096: 109, 8192: 218, 16384: 438, 32768: 881}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_128_bit_secure(name):
    params = PRESETS[name]
    assert sum(params.coeff_mod_bit_sizes) <= HE_STANDARD_128[params.poly_modulus_degree]
    # SEAL itself (through TenSEAL) enforces the same table at its default 128-bit level: it builds the context.
    ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
               coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))


def test_seal_refuses_one_bit_beyond_the_table_and_so_do_we():
    with pytest.raises(ValueError):
        ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[60, 50])  # 110 > 109
    with pytest.raises(CKKSParametersError, match="below 128-bit security"):
        CKKSParameters(4096, (60, 50), 40)


def test_unknown_presets_are_refused():
    with pytest.raises(CKKSParametersError, match="unknown CKKS preset 'tiny'"):
        CKKSAggregation(preset="tiny")


def test_values_beyond_the_range_are_refused_not_corrupted():
    roles = CKKSAggregation().setup(4, weight_unit=1.0)
    limit = roles.client.value_limit
    assert limit == PRESETS[DEFAULT_PRESET].max_magnitude / 4
    roles.client.protect(torch.full((3,), limit * 0.99, dtype=torch.float64), 1.0)
    with pytest.raises(AggregationOverflowError, match="exceeds the CKKS range"):
        roles.client.protect(torch.full((3,), limit * 1.01, dtype=torch.float64), 1.0)
    with pytest.raises(AggregationOverflowError):
        roles.client.protect(torch.tensor([float("nan")]), 1.0)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5000), st.sampled_from([1, 7, 2048]))
def test_pack_is_contiguous_and_unpack_inverts_it(length, slots):
    vector = np.arange(length, dtype=np.float64) + 1
    chunks = pack(vector, slots)
    assert len(chunks) == n_chunks(length, slots) == max(1, -(-length // slots))
    assert all(len(c) == slots for c in chunks)
    flat = np.concatenate(chunks)
    assert np.array_equal(flat[:length], vector) and not flat[length:].any()
    assert np.array_equal(unpack(chunks, length), vector)


def test_bytes_per_parameter_meet_the_goal():
    roles = CKKSAggregation().setup(1, weight_unit=1.0)
    length = 10 * SLOTS - 1  # fills ten ciphertexts exactly, with the weight
    message = roles.client.protect(torch.from_numpy(np.random.default_rng(0).normal(0, 0.01, length)), 1.0)
    assert message.nbytes / length <= 32  # at most 8x float32


def test_a_ckks_federation_trains_the_plain_model_and_the_server_saw_only_ciphertext():
    from fedsecure.fl import FedAvg, Federation, LocalTraining
    from tests.fedsecure.test_strategies import make_data, model

    data = make_data((6, 10, 4), seed=2)
    runs = {
        name: Federation(data, model(), FedAvg(), training=LocalTraining(batch_size=4, lr=0.1), rounds=3,
                         protocol=protocol, evaluate_every=0).run().trace
        for name, protocol in (("plain", PlainAggregation()), ("ckks", CKKSAggregation()))
    }
    # the same model, bit for bit: both protocols sum on the same fixed-point grid
    assert torch.equal(runs["ckks"].final_global, runs["plain"].final_global)
    ckks = runs["ckks"]
    received = ckks.rounds[0].received
    assert set(received) == {"site-0", "site-1", "site-2"}
    assert all(not m.plaintext and all(isinstance(c, bytes) for c in m.payload) for m in received.values())
    assert ckks.setup_bytes > 0
    assert 20 < ckks.bytes_per_parameter and runs["plain"].bytes_per_parameter == pytest.approx(4, rel=1e-3)
    assert all(c.protect_seconds > 0 and c.reveal_seconds > 0 for r in ckks.rounds for c in r.clients)
    assert all(r.combine_seconds > 0 for r in ckks.rounds)
