"""Parameter ranges: validation, exact grids, sampling, types, serialisation."""

from __future__ import annotations

import json
import math
import random

import pytest

from hpo.automation import (
    DiscreteParameterRange,
    LogUniformParameterRange,
    Parameter,
    ParameterSet,
    UniformIntegerParameterRange,
    UniformParameterRange,
)
from hpo.errors import ConfigError
from hpo.space.product import check_space, combination_at, space_size
from hpo.space.ranges import Kind

# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize(("make", "words"), [
    (lambda: UniformParameterRange("lr", 0.5, 0.1), "swap"),
    (lambda: UniformParameterRange("lr", 0, 1, step_size=0), "step_size must be > 0"),
    (lambda: UniformParameterRange("lr", 0, 1, step_size=-0.1), "step_size must be > 0"),
    (lambda: UniformParameterRange("lr", 0, 1, step_size=2), "larger than the range"),
    (lambda: UniformParameterRange("lr", "a", 1), "min_value must be a number"),
    (lambda: UniformParameterRange("lr", 0, None), "max_value must be a number"),
    (lambda: UniformParameterRange("lr", True, 2), "min_value must be a number"),
    (lambda: UniformParameterRange("lr", 0, math.inf), "finite"),
    (lambda: UniformParameterRange("lr", math.nan, 1), "finite"),
    (lambda: UniformParameterRange("lr", 0, 1, step_size="x"), "step_size must be a number"),
    (lambda: UniformParameterRange("lr", 1, 1, include_max_value=False), "empty"),
    (lambda: UniformParameterRange("", 0, 1), "non-empty name"),
    (lambda: UniformParameterRange("  ", 0, 1), "non-empty name"),
    (lambda: UniformParameterRange(None, 0, 1), "non-empty name"),  # type: ignore[arg-type]
    (lambda: UniformParameterRange("General/", 0, 1), "Section/name"),
    (lambda: UniformIntegerParameterRange("b", 1.5, 4), "integer"),
    (lambda: UniformIntegerParameterRange("b", 1, 4.0), "integer"),
    (lambda: UniformIntegerParameterRange("b", 1, 4, step_size=0.5), "integer"),
    (lambda: UniformIntegerParameterRange("b", 1, 4, step_size=0), ">= 1"),
    (lambda: UniformIntegerParameterRange("b", 1, 4, step_size=4), "larger than the range"),
    (lambda: UniformIntegerParameterRange("b", 5, 4), "swap"),
    (lambda: LogUniformParameterRange("lr", -4, -1, base=1), "base must be > 0 and not 1"),
    (lambda: LogUniformParameterRange("lr", -4, -1, base=0), "base must be > 0 and not 1"),
    (lambda: LogUniformParameterRange("lr", -4, -1, base=-2), "base must be > 0 and not 1"),
    (lambda: LogUniformParameterRange("lr", -1, -4), "swap"),
    (lambda: LogUniformParameterRange("lr", 0, 5000), "overflows"),
    (lambda: DiscreteParameterRange("opt", []), "empty"),
    (lambda: DiscreteParameterRange("opt", "adam"), "must be a list"),
    (lambda: DiscreteParameterRange("opt", ["a", "b", "a"]), "twice"),
    (lambda: DiscreteParameterRange("opt", [object()]), "not a JSON value"),
    (lambda: DiscreteParameterRange("opt", [math.nan]), "not a JSON value"),
    (lambda: ParameterSet([]), "empty"),
    (lambda: ParameterSet({"a": 1}), "list of dicts"),
    (lambda: ParameterSet([{}]), "non-empty dict"),
    (lambda: ParameterSet([{"a": 1}, {"a": 1}]), "twice"),
    (lambda: ParameterSet([{"a": 1, "General/a": 2}]), "appears twice"),
    (lambda: ParameterSet([{"a": UniformParameterRange("a", 0, 1)}]), "plain values"),
    (lambda: ParameterSet([{"": 1}]), "non-empty strings"),
])
def test_bad_ranges_raise_one_line_config_errors(make, words):
    with pytest.raises(ConfigError) as info:
        make()
    message = str(info.value)
    assert words in message
    assert "\n" not in message


def test_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="UniformParameterRange 'dropout'"):
        UniformParameterRange("dropout", 1, 0)
    with pytest.raises(ConfigError, match="DiscreteParameterRange 'opt'"):
        DiscreteParameterRange("opt", [])


# -- exact grids -------------------------------------------------------------------


def test_integer_grid_is_exact_ints():
    values = UniformIntegerParameterRange("b", 2, 16, step_size=2).values()
    assert values == [2, 4, 6, 8, 10, 12, 14, 16]
    assert all(type(v) is int for v in values)


def test_integer_grid_stops_before_max_off_the_grid():
    assert UniformIntegerParameterRange("b", 0, 10, step_size=3).values() == [0, 3, 6, 9]
    assert UniformIntegerParameterRange("b", 0, 10, step_size=3,
                                        include_max_value=False).values() == [0, 3, 6, 9]
    assert UniformIntegerParameterRange("b", 1, 4, include_max_value=False).values() == [1, 2, 3]


def test_float_grid_ends_at_exactly_max():
    values = UniformParameterRange("d", 0, 0.5, step_size=0.05).values()
    assert len(values) == 11
    assert values[-1] == 0.5
    assert values == [round(0.05 * i, 10) for i in range(11)]
    assert all(type(v) is float for v in values)


def test_float_grid_has_no_binary_noise():
    assert UniformParameterRange("x", 0.1, 0.3, step_size=0.1).values() == [0.1, 0.2, 0.3]
    grid = UniformParameterRange("lr", 0.00025, 0.01, step_size=0.00025).values()
    assert len(grid) == 40
    assert grid[-1] == 0.01
    assert grid[2] == 0.00075
    signed = UniformParameterRange("x", -1, 1, step_size=0.1).values()
    assert signed[10] == 0.0
    assert len(signed) == 21


def test_include_max_false_drops_max():
    values = UniformParameterRange("d", 0, 0.5, step_size=0.05, include_max_value=False).values()
    assert len(values) == 10
    assert values[-1] == 0.45


def test_grid_never_passes_max():
    assert UniformParameterRange("x", 0, 1, step_size=0.3).values() == [0.0, 0.3, 0.6, 0.9]
    # 1/3 is no decimal: the fourth point lands a hair below 1 and is taken as 1.
    thirds = UniformParameterRange("x", 0, 1, step_size=1 / 3).values()
    assert thirds == [0.0, 1 / 3, 2 / 3, 1.0]
    assert UniformParameterRange("x", 0, 1, step_size=1 / 3,
                                 include_max_value=False).values() == [0.0, 1 / 3, 2 / 3]
    assert UniformParameterRange("x", 0, 1e20, step_size=1e19).values()[-1] == 1e20
    assert UniformParameterRange("x", -1e-10, 1e20, step_size=5e19).values() == [
        -1e-10, 5e19 - 1e-10, 1e20 - 1e-10]


def test_continuous_range_cannot_be_listed():
    rng = UniformParameterRange("lr", 0.001, 0.1)
    assert not rng.is_finite
    assert rng.size is None
    with pytest.raises(ConfigError, match="give step_size for grid search"):
        rng.to_list()


def test_constant_range_is_one_value():
    assert UniformParameterRange("x", 0.5, 0.5).values() == [0.5]


def test_log_range_values_are_powers_of_the_exponents():
    rng = LogUniformParameterRange("lr", -4, -1, step_size=1)
    assert rng.values() == [10 ** e for e in (-4, -3, -2, -1)]
    assert all(type(v) is float for v in rng.values())
    halves = LogUniformParameterRange("lr", -2, 0, step_size=0.5).values()
    assert halves == pytest.approx([10 ** (e / 2) for e in range(-4, 1)])
    assert LogUniformParameterRange("w", 1, 4, base=2, step_size=1).values() == [2, 4, 8, 16]


def test_to_list_is_clearml_shaped():
    assert DiscreteParameterRange("Args/opt", ["sgd", "adam"]).to_list() == [
        {"Args/opt": "sgd"}, {"Args/opt": "adam"}]
    assert UniformIntegerParameterRange("e", 1, 2).to_list() == [{"e": 1}, {"e": 2}]


def test_discrete_values_keep_their_types():
    values = [1, 1.0, "1", True, None, [64, 64]]
    rng = DiscreteParameterRange("x", values)
    assert rng.values() == values
    assert [type(v) for v in rng.values()] == [type(v) for v in values]


def test_parameter_set_lists_and_samples_whole_combinations():
    combos = [{"opt": "sgd", "lr": 0.1}, {"opt": "adam", "Args/lr": 0.001}]
    pset = ParameterSet(combos)
    assert pset.to_list() == combos
    assert pset.names == ["opt", "lr", "Args/lr"]
    for _ in range(20):
        assert pset.get_value(random.Random(3)) in combos
    sample = pset.get_value()
    sample["opt"] = "changed"  # a copy: the set itself is untouched
    assert pset.to_list() == combos


# -- names, kinds --------------------------------------------------------------------


def test_name_is_kept_and_key_is_qualified():
    assert UniformParameterRange("lr", 0, 1).name == "lr"
    assert UniformParameterRange("lr", 0, 1).key == "General/lr"
    assert UniformParameterRange("Args/lr", 0, 1).key == "Args/lr"
    assert UniformParameterRange("lr", 0, 1).get_value(random.Random(0)).keys() == {"lr"}


def test_kinds():
    assert UniformParameterRange("a", 0, 1).kind == Kind.FLOAT == "float"
    assert UniformIntegerParameterRange("a", 0, 1).kind == "int"
    assert LogUniformParameterRange("a", 0, 1).kind == "log"
    assert DiscreteParameterRange("a", [1]).kind == "categorical"
    assert ParameterSet([{"a": 1}]).kind == "set"
    # The integer range is not a float range (as in ClearML); log is one.
    assert not isinstance(UniformIntegerParameterRange("a", 0, 1), UniformParameterRange)
    assert isinstance(LogUniformParameterRange("a", 0, 1), UniformParameterRange)


# -- sampling ------------------------------------------------------------------------


def draws(param: Parameter, n: int = 1000, seed: int = 7) -> list:
    rng = random.Random(seed)
    return [param.get_value(rng)[param.name] for _ in range(n)]


def test_stepped_float_sampling_stays_on_the_grid():
    param = UniformParameterRange("d", 0, 0.5, step_size=0.05)
    got = draws(param)
    assert set(got) <= set(param.values())
    assert set(got) == set(param.values())  # 1000 draws over 11 values hit them all


def test_continuous_float_sampling_stays_in_range():
    got = draws(UniformParameterRange("lr", 0.001, 0.1, include_max_value=False))
    assert all(0.001 <= v < 0.1 for v in got)
    assert len(set(got)) == len(got)


def test_integer_sampling_is_int_on_the_step():
    param = UniformIntegerParameterRange("b", 2, 16, step_size=2)
    got = draws(param)
    assert all(type(v) is int for v in got)
    assert set(got) == set(param.values())
    no_max = draws(UniformIntegerParameterRange("b", 1, 4, include_max_value=False))
    assert set(no_max) == {1, 2, 3}


def test_log_sampling_is_uniform_in_the_exponent():
    got = draws(LogUniformParameterRange("lr", -4, -1), n=2000)
    assert all(1e-4 <= v <= 0.1 for v in got)
    below = sum(v < 1e-3 for v in got) / len(got)  # one third of the exponent range
    assert 0.28 < below < 0.39
    stepped = LogUniformParameterRange("lr", -4, -1, step_size=1)
    assert set(draws(stepped)) == set(stepped.values())


def test_discrete_sampling_and_seeds():
    param = DiscreteParameterRange("opt", ["sgd", "adam", 3])
    assert set(draws(param)) == {"sgd", "adam", 3}
    assert draws(param, seed=1) == draws(param, seed=1)
    assert draws(param, seed=1) != draws(param, seed=2)


# -- serialisation ---------------------------------------------------------------------


ALL_RANGES = [
    UniformParameterRange("lr", 0.001, 0.1),
    UniformParameterRange("d", 0, 0.5, step_size=0.05, include_max_value=False),
    UniformIntegerParameterRange("Args/batch", 16, 128, step_size=16),
    LogUniformParameterRange("wd", -6, -2, base=2, step_size=0.5),
    DiscreteParameterRange("opt", ["sgd", 1, 2.5, True, None]),
    ParameterSet([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], name="pairs"),
]


@pytest.mark.parametrize("param", ALL_RANGES, ids=lambda p: type(p).__name__)
def test_to_dict_round_trips_through_json(param):
    data = json.loads(json.dumps(param.to_dict()))
    again = Parameter.from_dict(data)
    assert type(again) is type(param)
    assert again == param
    assert again.to_dict() == param.to_dict()
    if param.is_finite:
        assert again.values() == param.values()


def test_to_dict_shape():
    assert UniformParameterRange("lr", 0.001, 0.1).to_dict() == {
        "type": "uniform", "name": "lr", "min_value": 0.001, "max_value": 0.1,
        "step_size": None, "include_max_value": True}


def test_from_dict_accepts_clearml_class_names_and_defaults():
    param = Parameter.from_dict({"type": "UniformIntegerParameterRange", "name": "e",
                                 "min_value": 1, "max_value": 3})
    assert param.values() == [1, 2, 3]
    assert Parameter.from_dict({"type": "uniform_integer", "name": "e", "min_value": 1,
                                "max_value": 2, "step_size": None}).values() == [1, 2]


@pytest.mark.parametrize(("data", "words"), [
    ({"type": "gaussian", "name": "x"}, "unknown type"),
    ({"name": "x", "min_value": 0, "max_value": 1}, "unknown type"),
    ({"type": "uniform", "name": "x", "min": 0, "max_value": 1}, "unknown key 'min'"),
    ({"type": "uniform", "name": "x", "max_value": 1}, "give every one of"),
    ("uniform", "must be a mapping"),
])
def test_from_dict_errors(data, words):
    with pytest.raises(ConfigError, match=words):
        Parameter.from_dict(data)


# -- space helpers -------------------------------------------------------------------


def test_check_space_rejects_overlaps_and_empties():
    with pytest.raises(ConfigError, match="General/lr is set by two ranges"):
        check_space([UniformParameterRange("lr", 0, 1),
                     DiscreteParameterRange("General/lr", [1])])
    with pytest.raises(ConfigError, match="General/a is set by two ranges"):
        check_space([DiscreteParameterRange("a", [1]), ParameterSet([{"a": 2}])])
    with pytest.raises(ConfigError, match="empty"):
        check_space([])
    with pytest.raises(ConfigError, match="not a parameter range"):
        check_space([42])
    parsed = check_space([{"type": "discrete", "name": "x", "values": [1, 2]}])
    assert parsed == [DiscreteParameterRange("x", [1, 2])]


def test_combination_at_matches_product_order():
    import itertools

    space = [DiscreteParameterRange("a", [1, 2]), ParameterSet([{"b": 0, "c": 0}, {"b": 1}]),
             UniformIntegerParameterRange("d", 0, 2)]
    expected = [{**x, **y, **z} for x, y, z in itertools.product(*(p.to_list() for p in space))]
    assert space_size(space) == 12
    assert [combination_at(space, i) for i in range(12)] == expected
    assert space_size([*space, UniformParameterRange("e", 0, 1)]) is None
