"""The policy file: the shipped policies load, and mistakes are refused with an
error that names the field and the YAML line."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrails.errors import PolicyInvalid
from guardrails.policy import Policy
from packs.format import PackMetadata
from packs.loader import read_metadata

POLICIES = Path(__file__).resolve().parents[2] / "policies"

GOOD = """\
version: v1
priors:
  contexts:
    home: {cat: 3, dog: 1}
  floor: 0.01
blacklist:
  global: [fox]
"""


@pytest.mark.parametrize("name", ["default.yaml", "strict-example.yaml"])
def test_shipped_policies_load_and_fit_the_default_pack(
    name: str, default_pack: Path
) -> None:
    policy = Policy.load(POLICIES / name)
    policy.check_against(read_metadata(default_pack))
    assert {"Biscoe", "Dream", "Torgersen"} <= set(policy.contexts)


def test_default_policy_has_island_priors_floors_and_no_blacklist() -> None:
    policy = Policy.load(POLICIES / "default.yaml")
    assert policy.priors.contexts["Torgersen"] == {"Adelie": 52}
    assert policy.priors.contexts["Biscoe"] == {"Adelie": 44, "Gentoo": 124}
    assert not policy.priors.allow_hard_zeros and policy.priors.floor > 0
    assert policy.blacklist.global_ == [] and policy.blacklist.per_context == {}
    assert policy.input_bounds.action == "reject"
    assert not policy.priors.online.enabled


def test_a_good_policy_parses(meta: PackMetadata) -> None:
    policy = Policy.from_yaml(GOOD)
    policy.check_against(meta)
    assert policy.version == "v1"
    assert policy.blacklist.global_ == ["fox"]
    assert policy.store_inputs is True and policy.log_retention_days is None


def _error(text: str, meta: PackMetadata | None = None) -> PolicyInvalid:
    with pytest.raises(PolicyInvalid) as info:
        policy = Policy.from_yaml(text)
        if meta is not None:
            policy.check_against(meta)
    return info.value


@pytest.mark.parametrize(
    ("text", "field", "line", "words"),
    [
        ("version: v1\nprior:\n  floor: 0.1\n", "prior", 2, "unknown key"),
        ("version: v1\npriors:\n  flor: 0.1\n", "priors.flor", 3, "unknown key"),
        ("version: v1\npriors:\n  floor: -0.1\n", "priors.floor", 3, "greater than"),
        ("priors: {}\n", "version", 1, "required"),
        (
            "version: v1\ntemperature:\n  min: 3\n  max: 2\n",
            "temperature",
            2,
            "above max",
        ),
        (
            "version: v1\npriors:\n  online:\n    window_rows: 10\n"
            "    min_window_rows: 20\n",
            "priors.online",
            3,
            "min_window_rows",
        ),
        (
            "version: v1\npriors:\n  contexts:\n    home: {cat: -1}\n",
            "priors.contexts.home.cat",
            4,
            "greater than",
        ),
        (
            "version: v1\ninput_bounds:\n  action: warn\n",
            "input_bounds.action",
            3,
            "reject",
        ),
        (
            "version: v1\nblacklist:\n  per_context:\n    moon: [cat]\n",
            "blacklist.per_context.moon",
            4,
            "not declared in priors.contexts",
        ),
        (
            "version: v1\npriors:\n  floor: 0\n",
            "priors",
            2,
            "allow_hard_zeros",
        ),
        (
            "version: v1\ninput_bounds:\n  source: explicit\n",
            "input_bounds",
            2,
            "features",
        ),
        (
            "version: v1\noutput_bounds:\n  min_top_probability: 1.5\n",
            "output_bounds.min_top_probability",
            3,
            "less than",
        ),
    ],
)
def test_invalid_values_name_the_field_and_line(
    text: str, field: str, line: int, words: str
) -> None:
    err = _error(text)
    problem = err.problems[0]
    assert problem.path == field
    assert problem.line == line
    assert words in problem.message or words in err.message
    assert err.status_code == 422
    assert field in err.message


def test_yaml_syntax_error_names_the_line() -> None:
    err = _error("version: v1\npriors:\n  floor: [0.1\n  smoothing: 0\n")
    assert err.problems[0].line is not None and err.problems[0].line >= 3
    assert "not valid YAML" in err.message


def test_a_key_given_twice_is_refused() -> None:
    err = _error("version: v1\npriors:\n  floor: 0.1\nblacklist: {}\npriors: {}\n")
    assert (err.problems[0].path, err.problems[0].line) == ("priors", 5)
    assert "twice" in err.message


def test_a_policy_must_be_a_mapping() -> None:
    assert "mapping" in _error("- just\n- a list\n").message


def test_missing_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid, match="cannot read"):
        Policy.load(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("text", "field", "line", "name"),
    [
        (
            "version: v1\npriors:\n  contexts:\n    home: {cat: 1, cow: 2}\n",
            "priors.contexts.home.cow",
            4,
            "'cow'",
        ),
        (
            "version: v1\nblacklist:\n  global:\n    - cat\n    - cow\n",
            "blacklist.global[1]",
            5,
            "'cow'",
        ),
        (
            "version: v1\ndecision:\n  cost_matrix:\n    cat: {cow: 2}\n",
            "decision.cost_matrix.cat.cow",
            4,
            "'cow'",
        ),
        (
            "version: v1\ninput_bounds:\n  features:\n    x9: {min: 0}\n",
            "input_bounds.features.x9",
            4,
            "unknown feature 'x9'",
        ),
        ("version: v1\npriors:\n  floor: 0.5\n", "priors.floor", 3, "above 1"),
    ],
)
def test_names_the_pack_does_not_have_are_refused(
    meta: PackMetadata, text: str, field: str, line: int, name: str
) -> None:
    err = _error(text, meta)
    assert err.problems[0].path == field
    assert err.problems[0].line == line
    assert name in err.message


def test_undeclared_context_is_refused_when_built_in_code() -> None:
    with pytest.raises(ValueError, match="moon"):
        Policy.model_validate(
            {"version": "v", "blacklist": {"per_context": {"moon": []}}}
        )


def test_check_against_works_without_yaml_source(meta: PackMetadata) -> None:
    policy = Policy.model_validate({"version": "v", "blacklist": {"global": ["cow"]}})
    with pytest.raises(PolicyInvalid, match=r"blacklist\.global\[0\]: unknown label"):
        policy.check_against(meta)


def test_error_body_lists_every_problem() -> None:
    err = _error("version: v1\npriors:\n  floor: -1\n  smoothing: 2\n")
    fields = [p["field"] for p in err.detail["problems"]]
    assert fields == ["priors.floor", "priors.smoothing"]
