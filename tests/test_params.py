"""Typed parameters: names, flattening, and text typed on a command line."""

from __future__ import annotations

import pytest

from hpo import typed_params as P
from hpo.errors import ConfigError


def test_a_bare_name_means_the_general_section():
    assert P.qualify("lr") == "General/lr"
    assert P.qualify("Args/lr") == "Args/lr"
    with pytest.raises(ConfigError):
        P.qualify("Args/")


def test_nested_dicts_flatten_with_slashes():
    assert P.flatten({"opt": {"lr": 1, "beta": [0.9, 0.99]}, "x": None}, "General") == {
        "General/opt/lr": 1, "General/opt/beta": [0.9, 0.99], "General/x": None}


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("0.5", 0.5), ("true", True), ("False", False), ("null", None),
     ("None", None), ("[1, 2]", [1, 2]), ("adam", "adam"), ("", "")],
)
def test_text_on_a_command_line_gets_its_natural_type(text, value):
    parsed = P.parse_text(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("value", "like", "expected"),
    [("7", 3, 7), (7.0, 3, 7), ("0.5", 0.1, 0.5), (2, 0.1, 2.0), ("false", True, False),
     ("yes", False, True), (5, "a", "5"), ("[1]", [0], [1]), ("maybe", True, "maybe")],
)
def test_a_value_takes_the_type_of_the_value_it_replaces(value, like, expected):
    coerced = P.coerce(value, like)
    assert coerced == expected and type(coerced) is type(expected)


def test_an_assignment_is_parsed_against_current_parameters():
    assert P.parse_assignment("epochs=7", {"General/epochs": 3}) == ("General/epochs", 7)
    assert P.parse_assignment("Args/name=007", {"Args/name": "x"}) == ("Args/name", "007")
    with pytest.raises(ConfigError, match="Section/name=value"):
        P.parse_assignment("epochs")
    with pytest.raises(ConfigError, match="finite"):
        P.parse_assignment("lr=NaN")
