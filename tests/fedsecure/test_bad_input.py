"""Bad input through the command line: one line naming the problem, exit code 2, nothing written or overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsecure.cli import main
from tests.conftest import write_medmnist
from tests.fedsecure.test_spec import BAD_SPECS, MEMBERSHIP_ERRORS, MINIMAL
from tests.fedsecure.tiny_specs import TINY_FEDAVG, tiny_spec

MALFORMED_SPECS = BAD_SPECS + [(MINIMAL + "[attacks]\n" + line + "\n", message) for line, message in MEMBERSHIP_ERRORS]


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_one_line_error(code, stdout, stderr, message):
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert message in lines[0]
    assert "Traceback" not in stdout + stderr


def test_there_are_at_least_twenty_malformed_specs():
    assert len(MALFORMED_SPECS) >= 20


@pytest.mark.parametrize(("text", "message"), MALFORMED_SPECS)
def test_malformed_spec_is_one_line_and_exit_2(text, message, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["audit", spec, "--out", out], capsys)
    assert_one_line_error(code, stdout, stderr, message)
    assert not out.exists()


@pytest.fixture
def earlier_report(tmp_path):
    """An output directory holding someone's finished report."""
    out = tmp_path / "out"
    out.mkdir()
    report = {"environment": {"spec_sha256": "0" * 64, "device": "cpu"}, "spec": {"name": "someone-else"}}
    (out / "report.json").write_text(json.dumps(report))
    return out


def _data_spec(tmp_path, data_line: str, extra: str = "", sites: int = 2) -> str:
    path = tmp_path / "data.toml"
    path.write_text(
        f'name = "d"\n[data]\nsource = "medmnist"\n{data_line}\nsites = {sites}\n{extra}[[scenario]]\nname = "p"\n'
    )
    return str(path)


def _pickled_npz(path):
    np.savez(path, train_images=np.array([object()], dtype=object), train_labels=np.zeros(1))
    return path


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda t: ["audit", _data_spec(t, 'path = "absent.npz"')], "absent.npz: no such data file"),
        (lambda t: ["audit", _data_spec(t, 'path = "junk.npz"')], "junk.npz: not a readable .npz file"),
        (lambda t: ["audit", _data_spec(t, 'path = "pickled.npz"')],
         "is an object (pickled) array; refusing to unpickle input"),
        (lambda t: ["audit", _data_spec(t, 'path = "small.npz"',
                                        "[model]\nname = 'cnn'\n[federation]\nclients_per_round = 3\n")],
         "clients_per_round (3) exceeds data.sites (2)"),
        (lambda t: ["audit", _data_spec(t, 'path = "small.npz"', sites=10)],
         "small.npz: cannot split 48 samples into 10 sites with at least 8 each"),
        (lambda t: ["audit", _data_spec(t, 'path = "small.npz"'), "--only", "nope"],
         "--only nope: no such scenario in the spec; it has p"),
        (lambda t: ["audit", _data_spec(t, 'path = "small.npz"'), "--device", "tpu"], "unknown device 'tpu'"),
        (lambda t: ["audit", _data_spec(t, 'path = "small.npz"'), "--rounds", "3"], "No such option"),
        (lambda t: ["audit", t / "absent.toml"], "absent.toml: no such spec file"),
        (lambda t: ["audit", t], "is a directory, not a spec file"),
        (lambda t: ["report", t / "nowhere"], "nowhere: no such audit directory"),
        (lambda t: ["report", t], "report.json: no such report"),
        (lambda t: ["audit", _data_spec(t, 'path = "small.npz"'), "--engine", "spark"],
         "--engine spark: unknown engine"),
        (lambda t: ["keygen", _data_spec(t, 'path = "small.npz"'), "--scenario", "p", "--out", t / "k"],
         "scenario p uses protocol 'plain', which has no key"),
        (lambda t: ["keygen", _data_spec(t, 'path = "small.npz"'), "--scenario", "q", "--out", t / "k"],
         "--scenario q: no such scenario"),
        (lambda t: ["keygen", _data_spec(t, 'path = "small.npz"', "[[scenario]]\nname = 'c'\nprotocol = 'ckks'\n"),
                    "--scenario", "c", "--out", t / "small.npz"], "small.npz exists; a key is never overwritten"),
        (lambda t: ["sites", _data_spec(t, 'path = "small.npz"'), "--out", t], "exists; choose a new directory"),
    ],
)
def test_bad_files_and_arguments_are_one_line_and_exit_2(make_args, message, tmp_path, capsys):
    write_medmnist(tmp_path / "small.npz", n=(48, 4, 8))
    (tmp_path / "junk.npz").write_text("not numpy")
    _pickled_npz(tmp_path / "pickled.npz")
    out = tmp_path / "out"
    args = make_args(tmp_path)
    code, stdout, stderr = run_cli(args + (["--out", out] if args[0] == "audit" else []), capsys)
    assert_one_line_error(code, stdout, stderr, message)
    assert not out.exists()


TOO_SMALL_EPSILON = MINIMAL.replace(
    '[[scenario]]\nname = "plain"',
    '[[scenario]]\nname = "plain"\n\n[[scenario]]\nname = "dp"\n'
    'dp = { level = "client", epsilon = 1e-9, delta = 1e-5, clip = 0.5, placement = "distributed" }',
)


def test_an_epsilon_no_noise_can_meet_is_one_line_before_any_training(tmp_path, capsys):
    # Opacus gives up its noise search with "ValueError: The privacy budget is too low."; found by hand.
    assert TOO_SMALL_EPSILON != MINIMAL
    spec = tmp_path / "spec.toml"
    spec.write_text(TOO_SMALL_EPSILON)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["audit", spec, "--out", out], capsys)
    assert_one_line_error(code, stdout, stderr, "scenario dp: epsilon 1e-09 at delta 1e-05 cannot be met")
    assert not out.exists()


@pytest.mark.parametrize("out", ["/", "home"])
def test_a_directory_fedsecure_did_not_write_is_refused_even_with_force(out, tmp_path, capsys):
    # Found by hand: --out / (or a home folder) was accepted, and report.* and stages/ written into it.
    spec = tmp_path / "spec.toml"
    spec.write_text(MINIMAL)
    target = Path(out) if out == "/" else tmp_path / out
    if out == "home":
        (target / ".bashrc").parent.mkdir()
        (target / ".bashrc").write_text("export A=1\n")
        (target / "notes").mkdir()
    before = sorted(p.name for p in target.iterdir())
    for force in ([], ["--force"]):
        code, stdout, stderr = run_cli(["audit", spec, "--out", target, *force], capsys)
        assert_one_line_error(code, stdout, stderr, "holds files fedsecure did not write")
        assert sorted(p.name for p in target.iterdir()) == before


def test_force_replaces_an_earlier_fedsecure_run_and_nothing_else(earlier_report, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(tiny_spec("forced", 0, TINY_FEDAVG, '[[scenario]]\nname = "plain"\n'))
    code, stdout, stderr = run_cli(["audit", spec, "--out", earlier_report, "--force", "--resume"], capsys)
    assert_one_line_error(code, stdout, stderr, "--resume continues the run in --out and --force replaces it")
    (earlier_report / "figures").mkdir()
    (earlier_report / "figures" / "old.png").write_bytes(b"png")
    # A run that fails its checks (here: a spec whose budget no noise meets) leaves the earlier one as it was.
    broken = tmp_path / "broken.toml"
    broken.write_text(TOO_SMALL_EPSILON)
    code, stdout, stderr = run_cli(["audit", broken, "--out", earlier_report, "--force"], capsys)
    assert_one_line_error(code, stdout, stderr, "cannot be met")
    assert sorted(p.name for p in earlier_report.iterdir()) == ["figures", "report.json"]
    code, stdout, _ = run_cli(["audit", spec, "--out", earlier_report, "--force", "--device", "cpu"], capsys)
    assert code == 0, stdout
    assert json.loads((earlier_report / "report.json").read_text())["spec"]["name"] != "someone-else"
    assert not (earlier_report / "figures" / "old.png").exists()


@pytest.mark.parametrize("planted", ["report.md", "figures/holiday.jpg", "cache-link"])
def test_files_with_fedsecure_names_that_are_not_a_run_are_never_touched(planted, tmp_path, capsys):
    # Found in review: names alone are not proof. A user's report.md, a figures/ folder of photos, a
    # symbolic link: refused with --force or without, and left as they were.
    out = tmp_path / "out"
    out.mkdir()
    if planted == "cache-link":
        (out / "cache").symlink_to(tmp_path)
    else:
        (out / planted).parent.mkdir(exist_ok=True)
        (out / planted).write_text("mine")
    spec = tmp_path / "spec.toml"
    spec.write_text(MINIMAL)
    for force in ([], ["--force"]):
        code, stdout, stderr = run_cli(["audit", spec, "--out", out, *force], capsys)
        assert code == 2 and "error: " in stderr and "nothing was written" in stderr
    assert planted == "cache-link" or (out / planted).read_text() == "mine"


def test_another_specs_results_are_not_overwritten(earlier_report, tmp_path, capsys):
    before = (earlier_report / "report.json").read_bytes()
    spec = tmp_path / "spec.toml"
    spec.write_text(MINIMAL)
    code, stdout, stderr = run_cli(["audit", spec, "--out", earlier_report], capsys)
    assert_one_line_error(
        code, stdout, stderr, "holds the results of another spec ('someone-else'); choose another --out, or pass"
    )
    assert (earlier_report / "report.json").read_bytes() == before
    assert sorted(p.name for p in earlier_report.iterdir()) == ["report.json"]
