import re
from pathlib import Path

import pytest

from fedsecure.config.spec import DEFAULT_SPEC, load_spec, parse_spec
from fedsecure.data import Dirichlet
from fedsecure.errors import SpecError
from fedsecure.fl import FedAdam, FedProx
from fedsecure.privacy import ClientLevelDP, SampleLevelDP
from fedsecure.secure import CKKSAggregation, PlainAggregation

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
name = "t"
[[scenario]]
name = "plain"
"""


def dp_scenario(dp: str, protocol: str = "plain") -> str:
    """MINIMAL with its scenario given a protocol and the ``dp = { ... }`` table's fields."""
    return MINIMAL.replace('name = "plain"', f'name = "d"\nprotocol = "{protocol}"\ndp = {{ {dp} }}')


def test_the_default_shows_the_whole_product():
    # Issue 16: plain, CKKS, sample-level and client-level DP with secret noise, and both attacks, in one default;
    # issue 22: SecAgg+ beside CKKS.
    spec = load_spec(DEFAULT_SPEC).spec
    kinds = {(s.protocol, s.dp.level if s.dp else None) for s in spec.scenario}
    assert {("plain", None), ("ckks", None), ("secagg", None), ("plain", "sample"), ("ckks", "client")} <= kinds
    assert all(s.dp.secure_rng for s in spec.scenario if s.dp is not None)
    assert spec.attacks.inversion is not None and spec.attacks.membership is not None
    assert spec.thresholds.max_epsilon is not None


def test_shipped_specs_validate():
    default = load_spec()
    assert default.spec.data.source == "synthetic"
    assert (REPO / "audits" / "default.toml").read_text() == DEFAULT_SPEC.read_text()
    pneumonia = load_spec(REPO / "audits" / "pneumoniamnist.toml")
    assert pneumonia.spec.data.path == REPO / "audits" / "../../shared/data/pneumoniamnist.npz"
    assert pneumonia.spec.data.sites == 4 and pneumonia.spec.federation.rounds == 20
    assert isinstance(pneumonia.spec.data.partitioner(), Dirichlet)


def test_data_override_and_relative_paths(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(MINIMAL + '[data]\nsource = "medmnist"\npath = "x.npz"\n')
    assert load_spec(spec).spec.data.path == tmp_path / "x.npz"
    assert load_spec(spec, data_path=Path("other.npz")).spec.data.path == Path("other.npz")


def test_strategy_options_reach_the_strategy():
    spec = parse_spec(MINIMAL + '[federation]\nstrategy = "fedprox"\nmu = 0.5\n', "t").spec
    assert spec.federation.strategy_instance() == FedProx(mu=0.5)
    adam = parse_spec(MINIMAL + '[federation]\nstrategy = "fedadam"\nserver_lr = 0.1\n', "t").spec
    strategy = adam.federation.strategy_instance()
    assert isinstance(strategy, FedAdam) and strategy.server_lr == 0.1


def test_ckks_scenario_builds_its_protocol():
    spec = parse_spec(MINIMAL + '[[scenario]]\nname = "he"\nprotocol = "ckks"\nckks_preset = "n4096-q60"\n', "t").spec
    plain, ckks = (s.protocol_instance() for s in spec.scenario)
    assert isinstance(plain, PlainAggregation)
    assert isinstance(ckks, CKKSAggregation) and ckks.preset == "n4096-q60"


def test_dp_scenarios_build_their_mechanisms():
    text = MINIMAL + (
        '[[scenario]]\nname = "s"\n'
        'dp = { level = "sample", epsilon = 8.0, delta = 1e-5, clip = 0.5, accountant = "prv" }\n'
        '[[scenario]]\nname = "c"\nprotocol = "ckks"\n'
        'dp = { level = "client", epsilon = 4.0, delta = 1e-5, placement = "distributed" }\n'
    )
    _, sample, client = parse_spec(text, "t").spec.scenario
    assert sample.dp.mechanism() == SampleLevelDP(epsilon=8.0, delta=1e-5, clip=0.5, accountant="prv")
    assert client.dp.mechanism() == ClientLevelDP(epsilon=4.0, delta=1e-5, placement="distributed")


def test_spec_hash_is_of_the_text():
    a, b = parse_spec(MINIMAL, "a"), parse_spec(MINIMAL + "\n", "b")
    assert a.sha256 != b.sha256 and len(a.sha256) == 64


FILES = MINIMAL + '[data]\nsource = "files"\n'
TWO_SITES = '[[data.site]]\nname = "a"\ndatalist = "a.csv"\n[[data.site]]\nname = "b"\ndatalist = "b.csv"\n'

BAD_SPECS = [
    ("", "name: Field required"),
    (FILES, "source 'files' needs either datalist = one datalist, or [[data.site]] entries"),
    (FILES + 'datalist = "x.csv"\n' + TWO_SITES, "source 'files' needs either datalist"),
    (MINIMAL + '[data]\nsource = "medmnist"\npath = "x.npz"\nwindow = [0, 1]\n',
     "window: image-file options apply to source 'files' only"),
    (FILES + "sites = 3\n" + TWO_SITES, "sites = 3 but 2 [[data.site]] entries are listed"),
    (FILES + 'partition = "dirichlet"\n' + TWO_SITES, "partition does not apply to [[data.site]]"),
    (FILES + TWO_SITES.replace('"b"', '"a"'), "[[data.site]] names repeat: a"),
    (FILES + 'datalist = "x.csv"\nwindow = [1, 0]\n', "window [1.0, 0.0]: the lower bound must be below the upper"),
    (FILES + 'datalist = "x.csv"\nval_fraction = 0.5\ntest_fraction = 0.5\n', "must leave images to train on"),
    (FILES + 'datalist = "x.csv"\nspacing = [1, 1, 1]\nsize = [8, 8]\n', "spacing and size give different numbers"),
    (FILES + 'datalist = "x.csv"\norientation = "XYZ"\n', "data.orientation: String should match pattern"),
    (FILES + 'datalist = "x.csv"\nwindow = [0, 1]\npercentiles = [1, 99]\n', "window and percentiles are two ways"),
    (FILES + 'datalist = "x.csv"\norientation = "LLS"\n', "orientation 'LLS' names an axis twice"),
    (MINIMAL + '[data]\nspatial_dims = 3\nimage_size = 256\n', "image_size 256 for synthetic volumes: at most 128"),
    (MINIMAL + '[data]\nsource = "medmnist"\npath = "x.npz"\nspatial_dims = 3\n',
     "spatial_dims applies to source 'synthetic' only"),
    ('name = "t"\n[data]\nsites = 3\n[[scenario]]\nname = "d"\nprotocol = "ckks"\n'
     'dp = { level = "client", epsilon = 8.0, delta = 1e-5, placement = "distributed", min_sites = 4 }\n',
     "scenario[0] 'd': dp.min_sites (4) exceeds data.sites (3)"),
    ('name = "t"\n[[scenario]]\nname = "d"\n'
     'dp = { level = "client", epsilon = 8.0, delta = 1e-5, placement = "central", min_sites = 2 }\n',
     "min_sites applies to client-level DP with placement = 'distributed' only"),
    (MINIMAL + "[thresholds]\nmax_delta = 1.5\n", "thresholds.max_delta: Input should be less than 1"),
    ('name = "t"', "scenario: Field required"),
    (MINIMAL + "[[scenario]]\nname = 'plain'\n", "scenario names must be unique; repeated: plain"),
    (MINIMAL.replace('name = "plain"', 'name = "a/b"'), "scenario[0].name: must be 1-64 characters"),
    (MINIMAL + 'colour = "red"', "colour: unknown field"),
    (MINIMAL + "[federation]\nrounds = 0\n", "federation.rounds: Input should be greater than or equal to 1"),
    (MINIMAL + '[federation]\nrounds = "many"\n', "federation.rounds: Input should be a valid integer"),
    (MINIMAL + '[federation]\nstrategy = "fedsquare"\n',
     "federation.strategy: unknown strategy 'fedsquare'; choose one of: fedavg, fedsgd, fedprox, fedadam, fedyogi, "
     "scaffold, fedbn"),
    (MINIMAL + "[federation]\nmu = 0.1\n", "federation: mu is not an option of strategy 'fedavg'"),
    (MINIMAL + '[federation]\noptimizer = "lbfgs"\n', "federation.optimizer: unknown optimizer 'lbfgs'"),
    (MINIMAL + '[model]\nname = "vit"\n', "model.name: unknown model 'vit'"),
    (MINIMAL + '[data]\nsource = "dicom"\n', "data.source: unknown data source 'dicom'"),
    (MINIMAL + '[data]\npartition = "random"\n', "data.partition: unknown partition 'random'"),
    (MINIMAL + '[data]\nsource = "medmnist"\n', "data: source 'medmnist' needs path"),
    (MINIMAL + '[data]\npath = "x.npz"\n', "data: source 'synthetic' generates its images and takes no path"),
    (MINIMAL + "[data]\nalpha = -1\n", "data.alpha: Input should be greater than 0"),
    (MINIMAL + "[data]\nsites = 3\n[federation]\nclients_per_round = 5\n",
     "clients_per_round (5) exceeds data.sites (3)"),
    (MINIMAL + "[data]\nsites = 300\n", "cannot give 300 sites 8 samples each"),
    (MINIMAL.replace('name = "plain"', 'name = "c"\nprotocol = "smpc"'),
     "scenario[0].protocol: protocol 'smpc' is not available in this version"),
    (MINIMAL.replace('name = "plain"', 'name = "c"\nckks_preset = "n4096-q60"'),
     "ckks_preset is set but protocol is 'plain'"),
    (MINIMAL.replace('name = "plain"', 'name = "c"\nprotocol = "ckks"\nckks_preset = "tiny"'),
     "scenario[0].ckks_preset: unknown CKKS preset 'tiny'"),
    (dp_scenario('level = "sample", epsilon = 8.0'), "scenario[0].dp.delta: Field required"),
    (dp_scenario('level = "user", epsilon = 8.0, delta = 1e-5'),
     "scenario[0].dp.level: Input should be 'sample' or 'client'"),
    (dp_scenario('level = "sample", epsilon = 0, delta = 1e-5'),
     "scenario[0].dp.epsilon: Input should be greater than 0"),
    (dp_scenario('level = "sample", epsilon = 8.0, delta = 1e-5, accountant = "moments"'),
     "scenario[0].dp.accountant: unknown accountant 'moments'; choose one of: rdp, prv"),
    (dp_scenario('level = "client", epsilon = 8.0, delta = 1e-5'), "scenario[0]: client-level dp needs placement"),
    (dp_scenario('level = "client", epsilon = 8.0, delta = 1e-5, placement = "central"', protocol="ckks"),
     "central DP noise needs a server that reads the sum, but protocol 'ckks' hides it"),
    (dp_scenario('level = "sample", epsilon = 8.0, delta = 1e-5, placement = "central"'),
     "placement applies to client-level DP only"),
    (dp_scenario('level = "client", epsilon = 8.0, delta = 1e-5, placement = "central", grad_sample_mode = "ghost"'),
     "grad_sample_mode applies to sample-level DP only"),
    (dp_scenario('level = "sample", epsilon = 8.0, delta = 1e-5, noise = 1.0'), "scenario[0].dp.noise: unknown field"),
    (dp_scenario('level = "sample", epsilon = 8.0, delta = 1e-5, adaptive_quantile = 0.5'),
     "adaptive_quantile: adaptive clipping applies to client-level DP only"),
    (dp_scenario('level = "client", epsilon = 8.0, delta = 1e-5, placement = "central", clip_lr = 0.1'),
     "clip_lr and count_stddev need adaptive_quantile"),
    (MINIMAL + '[attacks]\ninversion = { method = "rgap" }\n',
     "attacks.inversion.method: unknown inversion attack 'rgap'; "
     "choose one of: dlg, idlg, inverting_gradients, fedavg_update"),
    (MINIMAL + '[attacks]\ninversion = { images = 6, batch_size = 4 }\n',
     "images (6) must be a multiple of batch_size (4)"),
    (MINIMAL + '[attacks]\ninversion = { site = 4 }\n',
     "attacks.inversion.site (4) must be a site index below data.sites (4)"),
    (MINIMAL + '[attacks]\ninversion = { restarts = 0 }\n', "attacks.inversion.restarts"),
    (MINIMAL + '[attacks]\ninversion = { steps = 10 }\n', "attacks.inversion.steps: unknown field"),
    (MINIMAL + '[attacks]\nspying = { method = "x" }\n', "attacks.spying: unknown field"),
    (MINIMAL + "[thresholds]\nmax_epsilon = 0\n", "thresholds.max_epsilon: Input should be greater than 0"),
    # Positions that do not apply are refused by name.
    (MINIMAL + '[attacks]\ninversion = { positions = ["external"] }\n',
     "inversion cannot run from the external position: the released model carries no update to invert"),
    (MINIMAL + '[attacks]\nmembership = { positions = ["janitor"] }\n',
     "attacks.membership.positions[0]: Input should be 'external', 'server' or 'client'"),
    (MINIMAL + '[attacks]\nmembership = { positions = ["server", "server"] }\n', "positions repeated: server"),
    (MINIMAL + '[attacks]\nmembership = { positions = [] }\n', "attacks.membership.positions"),
    (MINIMAL + '[data]\nsites = 1\n[attacks]\ninversion = { positions = ["client"] }\n',
     "the client position needs another site (data.sites >= 2)"),
    (MINIMAL + '[data]\nsites = 1\n[attacks]\nmembership = { positions = ["client"] }\n',
     "the client position needs another site (data.sites >= 2)"),
    (MINIMAL + '[attacks]\ninversion = { site = 1, attacker_site = 1 }\n',
     "attacks.inversion.attacker_site (1) is the attacked site"),
    (MINIMAL + '[attacks]\ninversion = { attacker_site = 9 }\n',
     "attacks.inversion.attacker_site (9) must be a site index below data.sites (4)"),
    (MINIMAL + '[attacks]\ninversion = { round = 99 }\n', "attacks.inversion.round (99) exceeds federation.rounds"),
    (MINIMAL + '[attacks]\nmembership = { attacker_site = 4 }\n',
     "attacks.membership.attacker_site (4) must be a site index below data.sites (4)"),
    ("name = [", "invalid TOML"),
    ("seed = -1\n" + MINIMAL, "seed: Input should be greater than or equal to 0"),
    (MINIMAL + "seed = 1\n", "scenario[0].seed: unknown field"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SPECS)
def test_bad_specs_get_one_line_naming_the_field(text, message):
    with pytest.raises(SpecError) as error:
        parse_spec(text, "spec.toml")
    assert str(error.value).startswith("spec.toml: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unreadable_spec_files(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "absent.toml")
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(binary)


MEMBERSHIP_ERRORS = [
    ('membership = { method = "gan" }', "attacks.membership.method: unknown membership attack 'gan'"),
    ('membership = { method = "loss", online = true }', "membership method 'loss' takes no option online"),
    ('membership = { shadow_models = 1 }', "attacks.membership.shadow_models"),
    ('membership = { canaries = 10, canary_guesses = 20 }', "canary_guesses (20) exceeds canaries (10)"),
    ('membership = { confidence = 1.5 }', "attacks.membership.confidence"),
]


@pytest.mark.parametrize(("line", "message"), MEMBERSHIP_ERRORS)
def test_membership_settings_are_checked(line, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(MINIMAL + "[attacks]\n" + line + "\n", origin="test")


def test_membership_options_reach_the_attack():
    text = MINIMAL + '[attacks]\nmembership = { method = "lira", online = false, shadow_models = 4 }\n'
    loaded = parse_spec(text, "t")
    attack = loaded.spec.attacks.membership.attack()
    assert type(attack).__name__ == "LiRA" and attack.online is False


def test_every_shipped_spec_is_valid():
    for path in sorted((REPO / "audits").glob("*.toml")):
        assert load_spec(path).spec.name, path


def test_positions_default_to_every_seat_that_applies():
    spec = parse_spec(MINIMAL + '[attacks]\ninversion = {}\nmembership = {}\n', "t").spec
    assert [p.value for p in spec.attacks.inversion.positions_on(4)] == ["server", "client"]
    assert [p.value for p in spec.attacks.membership.positions_on(4)] == ["external", "server", "client"]
    assert [p.value for p in spec.attacks.membership.positions_on(1)] == ["external", "server"]  # no other site
    assert spec.attacks.inversion.attacker_on(4) == 1
    chosen = parse_spec(MINIMAL + '[attacks]\nmembership = { positions = ["client"] }\n', "t").spec
    assert [p.value for p in chosen.attacks.membership.positions_on(4)] == ["client"]


def test_inverting_gradients_gets_its_strong_setting_unless_the_spec_says_otherwise():
    plain = parse_spec(MINIMAL + '[attacks]\ninversion = { method = "inverting_gradients" }\n', "t").spec
    attack = plain.attacks.inversion.attack(seed=3)
    strong = (attack.subspace, attack.init, attack.prior_weight, attack.restarts, attack.seed)
    assert strong == (256, "prior", 1e-3, 2, 3)
    said = parse_spec(MINIMAL + '[attacks]\ninversion = { method = "inverting_gradients", subspace = 0 }\n', "t").spec
    assert said.attacks.inversion.attack(seed=3).subspace == 0
    # DLG and iDLG keep their papers' settings.
    idlg = parse_spec(MINIMAL + '[attacks]\ninversion = { method = "idlg" }\n', "t").spec.attacks.inversion.attack(0)
    assert (idlg.subspace, idlg.init) == (0, "random")


def test_a_dp_list_sweeps_one_scenario_per_value_named_after_it():
    text = MINIMAL + (
        '[[scenario]]\nname = "dp"\nprotocol = "ckks"\n'
        'dp = { level = "client", epsilon = [1, 2.5, 16], delta = 1e-5, placement = "distributed" }\n'
        '[[scenario]]\nname = "clipped"\ndp = { level = "sample", epsilon = 8, clip = [0.5, 1], delta = 1e-5 }\n'
    )
    spec = parse_spec(text, "spec.toml").spec
    assert [(s.name, s.protocol, s.dp and s.dp.epsilon, s.dp and s.dp.clip) for s in spec.scenario] == [
        ("plain", "plain", None, None),
        ("dp-eps1", "ckks", 1.0, 1.0), ("dp-eps2.5", "ckks", 2.5, 1.0), ("dp-eps16", "ckks", 16.0, 1.0),
        ("clipped-clip0.5", "plain", 8.0, 0.5), ("clipped-clip1", "plain", 8.0, 1.0),
    ]


@pytest.mark.parametrize(("dp", "message"), [
    ('{ level = "sample", epsilon = [1, 1], delta = 1e-5 }', "scenario[1].dp.epsilon: the sweep repeats a value"),
    ('{ level = "sample", epsilon = [], delta = 1e-5 }', "a sweep is a non-empty list of numbers"),
    ('{ level = "sample", epsilon = [1, "x"], delta = 1e-5 }', "a sweep is a non-empty list of numbers"),
    ('{ level = "sample", epsilon = [1, 2], clip = [1, 2], delta = 1e-5 }', "sweep one option at a time"),
    ('{ level = "sample", epsilon = [1, -2], delta = 1e-5 }', "dp.epsilon: Input should be greater than 0"),
])
def test_a_bad_sweep_is_refused_in_one_line(dp, message):
    with pytest.raises(SpecError) as error:
        parse_spec(MINIMAL + f'[[scenario]]\nname = "dp"\ndp = {dp}\n', "spec.toml")
    assert message in str(error.value) and "\n" not in str(error.value)
