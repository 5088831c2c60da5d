"""Random and grid search: reproducible, no repeats, exact products, and a saved state
that refuses another space (that a restored one continues exactly is the contract
suite's: tests/test_strategy_contract.py)."""

from __future__ import annotations

import itertools
import json

import pytest

from hpo.automation import (
    DiscreteParameterRange,
    LogUniformParameterRange,
    ParameterSet,
    UniformIntegerParameterRange,
    UniformParameterRange,
)
from hpo.errors import ConfigError
from hpo.strategies import (
    GridSearch,
    NoSuggestion,
    Objective,
    RandomSearch,
    SearchStrategy,
    Suggestion,
    resolve,
)

OBJECTIVES = [Objective("validation", "loss", "min")]


def small_space() -> list:
    return [
        UniformIntegerParameterRange("epochs", 2, 6, step_size=2),  # 3 values
        DiscreteParameterRange("Args/opt", ["sgd", "adam"]),  # 2
        ParameterSet([{"bs": 16, "lr": 0.1}, {"bs": 64, "lr": 0.01}]),  # 2
    ]


def mixed_space() -> list:
    return [UniformParameterRange("lr", 0.0001, 0.1),
            LogUniformParameterRange("wd", -6, -2),
            UniformIntegerParameterRange("layers", 1, 8),
            DiscreteParameterRange("act", ["relu", "gelu"])]


def drain(strategy: SearchStrategy, limit: int = 10_000) -> list[Suggestion]:
    out = []
    for _ in range(limit):
        got = strategy.suggest()
        if got is NoSuggestion.DONE:
            return out
        assert isinstance(got, Suggestion)
        out.append(got)
    raise AssertionError("the strategy never said DONE")


def take(strategy: SearchStrategy, n: int) -> list[Suggestion]:
    got = [strategy.suggest() for _ in range(n)]
    assert all(isinstance(s, Suggestion) for s in got)
    return got  # type: ignore[return-value]


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def product_of(space: list) -> list[dict]:
    return [dict(kv for part in combo for kv in part.items())
            for combo in itertools.product(*(p.to_list() for p in space))]


# -- random search -------------------------------------------------------------------


def test_random_is_reproducible_with_a_seed():
    a = take(RandomSearch(mixed_space(), OBJECTIVES, seed=11), 50)
    b = take(RandomSearch(mixed_space(), OBJECTIVES, seed=11), 50)
    c = take(RandomSearch(mixed_space(), OBJECTIVES, seed=12), 50)
    assert [s.parameters for s in a] == [s.parameters for s in b]
    assert [s.parameters for s in a] != [s.parameters for s in c]
    assert [s.trial_id for s in a[:3]] == ["t0", "t1", "t2"]


def test_random_suggestions_are_in_the_space():
    for s in take(RandomSearch(mixed_space(), OBJECTIVES, seed=1), 200):
        p = s.parameters
        assert set(p) == {"lr", "wd", "layers", "act"}
        assert 0.0001 <= p["lr"] <= 0.1
        assert 1e-6 <= p["wd"] <= 1e-2
        assert type(p["layers"]) is int and 1 <= p["layers"] <= 8
        assert p["act"] in ("relu", "gelu")
        assert s.max_iteration is None


def test_random_drains_a_finite_space_exactly_once_each():
    space = small_space()
    got = drain(RandomSearch(space, OBJECTIVES, seed=5))
    assert len(got) == 12
    assert sorted(key(s.parameters) for s in got) == sorted(key(c) for c in product_of(space))
    # A ParameterSet contributes its whole combination.
    assert all({"bs", "lr"} <= set(s.parameters) for s in got)


def test_random_one_value_space():
    search = RandomSearch([DiscreteParameterRange("x", [1])], OBJECTIVES, seed=0)
    assert search.suggest() == Suggestion("t0", {"x": 1})
    assert search.suggest() is NoSuggestion.DONE
    assert search.suggest() is NoSuggestion.DONE


def test_random_restore_rejects_other_spaces_and_garbage():
    state = RandomSearch(small_space(), OBJECTIVES, seed=1).state()
    other = RandomSearch([DiscreteParameterRange("x", [1, 2])], OBJECTIVES)
    with pytest.raises(ConfigError, match="different parameter space"):
        other.restore(state)
    with pytest.raises(ConfigError, match="malformed"):
        RandomSearch(small_space(), OBJECTIVES).restore({"seen": []})
    with pytest.raises(ConfigError, match="malformed"):
        RandomSearch(small_space(), OBJECTIVES).restore({**state, "suggested": "many"})
    with pytest.raises(ConfigError, match="malformed"):
        RandomSearch(small_space(), OBJECTIVES).restore({**state, "start": [1]})
    legacy = {"fingerprint": state["fingerprint"], "seen": [], "rng": [3, [1, 2], None]}
    with pytest.raises(ConfigError, match="malformed"):
        RandomSearch(small_space(), OBJECTIVES).restore(legacy)


def test_random_state_stays_small_and_restores_the_same_draws():
    space = [UniformParameterRange("x", 0.0, 1.0), DiscreteParameterRange("y", [1, 2, 3])]
    for seed in (7, None):
        search = RandomSearch(space, OBJECTIVES, seed=seed)
        drawn = [search.suggest() for _ in range(50)]
        state = search.state()
        assert len(json.dumps(state)) < 200  # not the configurations seen
        again = RandomSearch(space, OBJECTIVES, seed=seed)
        again.restore(json.loads(json.dumps(state)))
        assert [search.suggest() for _ in range(20)] == [again.suggest() for _ in range(20)]
        assert again.state() == search.state() and len(drawn) == 50


def test_random_restores_a_state_saved_with_the_configurations_seen():
    # The format before the seed and count: every configuration seen, and the generator.
    space = [DiscreteParameterRange("x", [1, 2, 3, 4])]
    search = RandomSearch(space, OBJECTIVES, seed=3)
    first = search.suggest()
    assert isinstance(first, Suggestion)
    legacy = legacy_state(search)
    restored = RandomSearch(space, OBJECTIVES, seed=3)
    restored.restore(json.loads(json.dumps(legacy)))
    rest = [s.parameters["x"] for s in drain(restored)]
    assert sorted([first.parameters["x"], *rest]) == [1, 2, 3, 4]


def legacy_state(search: RandomSearch) -> dict:
    """``search``'s state in the format before the seed and count: every configuration
    seen, and the generator."""
    version, internal, gauss = search._rng.getstate()
    return {"fingerprint": search.state()["fingerprint"], "seen": list(search._seen),
            "rng": [version, list(internal), gauss]}


def test_random_restored_from_the_seen_list_never_repeats_over_later_resumes():
    # Its draws did not follow from any seed it holds: were it to save a seed and a
    # count, the next restore would redraw other configurations than those that ran.
    space = [DiscreteParameterRange("x", list(range(20)))]
    first = RandomSearch(space, OBJECTIVES)  # no seed
    ran = [s.parameters["x"] for s in take(first, 5)]
    second = RandomSearch(space, OBJECTIVES)
    second.restore(json.loads(json.dumps(legacy_state(first))))
    ran += [s.parameters["x"] for s in take(second, 5)]
    third = RandomSearch(space, OBJECTIVES)
    third.restore(json.loads(json.dumps(second.state())))
    ran += [s.parameters["x"] for s in drain(third)]
    assert sorted(ran) == list(range(20))


def test_random_restore_refuses_a_state_it_would_redraw_otherwise(monkeypatch):
    # The fingerprint covers the space, not the code that draws: the digest does.
    space = [DiscreteParameterRange("x", list(range(20))), DiscreteParameterRange("y", [1, 2])]
    search = RandomSearch(space, OBJECTIVES, seed=5)
    take(search, 5)
    state = json.loads(json.dumps(search.state()))
    with pytest.raises(ConfigError, match="draws other configurations from its seed"):
        RandomSearch(space, OBJECTIVES, seed=5).restore({**state, "digest": "0" * 64})
    # Drawing code that changed: every draw a walk of the grid instead.
    with monkeypatch.context() as patched:
        patched.setattr("hpo.strategies.random_search._MAX_DRAWS", 0)
        with pytest.raises(ConfigError, match="draws other configurations from its seed"):
            RandomSearch(space, OBJECTIVES, seed=5).restore(state)
    again = RandomSearch(space, OBJECTIVES, seed=5)
    again.restore(state)
    assert again.state() == state
    with pytest.raises(ConfigError, match="malformed"):
        RandomSearch(space, OBJECTIVES).restore({k: v for k, v in state.items()
                                                 if k != "digest"})


@pytest.mark.parametrize("seed", [1.5, True, b"7", [7]])
def test_random_refuses_a_seed_it_could_not_restore(seed):
    with pytest.raises(ConfigError, match=r"random search: seed must be an integer or a "
                                          r"string, not .*: e\.g\. seed: 7"):
        RandomSearch(small_space(), OBJECTIVES, seed=seed)


@pytest.mark.parametrize("seed", [7, "lr-sweep"])
def test_random_restores_each_seed_it_takes(seed):
    search = RandomSearch(small_space(), OBJECTIVES, seed=seed)
    take(search, 3)
    again = RandomSearch(small_space(), OBJECTIVES, seed=seed)
    again.restore(json.loads(json.dumps(search.state())))
    assert [s.parameters for s in drain(again)] == [s.parameters for s in drain(search)]


def test_space_errors_at_construction():
    with pytest.raises(ConfigError, match="set by two ranges"):
        RandomSearch([DiscreteParameterRange("lr", [1]), DiscreteParameterRange("lr", [2])],
                     OBJECTIVES)
    with pytest.raises(ConfigError, match="empty"):
        GridSearch([], OBJECTIVES)


def test_space_may_be_given_as_dicts():
    search = GridSearch([{"type": "discrete", "name": "x", "values": [1, 2]}], OBJECTIVES)
    assert [s.parameters for s in drain(search)] == [{"x": 1}, {"x": 2}]


# -- grid search -------------------------------------------------------------------------


def test_grid_yields_the_exact_product_once_in_order():
    space = small_space()
    got = drain(GridSearch(space, OBJECTIVES))
    assert [s.parameters for s in got] == product_of(space)
    assert [s.trial_id for s in got] == [f"t{i}" for i in range(12)]


def test_grid_with_float_steps():
    space = [UniformParameterRange("d", 0, 0.5, step_size=0.05),
             LogUniformParameterRange("lr", -3, -1, step_size=1)]
    got = [s.parameters for s in drain(GridSearch(space, OBJECTIVES))]
    assert len(got) == 33
    assert got[-1] == {"d": 0.5, "lr": 0.1}


def test_grid_refuses_continuous_ranges():
    with pytest.raises(ConfigError,
                       match="UniformParameterRange 'lr' has no step_size: grid search needs"):
        GridSearch([UniformParameterRange("lr", 0.001, 0.1)], OBJECTIVES)
    with pytest.raises(ConfigError, match="LogUniformParameterRange 'wd' has no step_size"):
        GridSearch([LogUniformParameterRange("wd", -6, -2)], OBJECTIVES)


def test_grid_restore_rejects_another_space_and_bad_state():
    state = GridSearch(small_space(), OBJECTIVES).state()
    with pytest.raises(ConfigError, match="different parameter space"):
        GridSearch([DiscreteParameterRange("x", [1])], OBJECTIVES).restore(state)
    with pytest.raises(ConfigError, match="malformed"):
        GridSearch(small_space(), OBJECTIVES).restore({})
    with pytest.raises(ConfigError, match="bad next_index"):
        GridSearch(small_space(), OBJECTIVES).restore({**state, "next_index": -1})


# -- registry --------------------------------------------------------------------------


def test_resolve_by_name_and_path():
    assert resolve("random") is RandomSearch
    assert resolve("grid") is GridSearch
    assert resolve("hpo.strategies.random_search.RandomSearch") is RandomSearch
    assert resolve("hpo.strategies.grid_search:GridSearch") is GridSearch
    assert resolve(GridSearch) is GridSearch


@pytest.mark.parametrize(("name", "words"), [
    ("nope", "unknown strategy 'nope'"),
    ("hpo.strategies.nope.Thing", "cannot import"),
    ("hpo.space.ranges.ParameterSet", "not a SearchStrategy"),
])
def test_resolve_errors(name, words):
    with pytest.raises(ConfigError, match=words):
        resolve(name)


def test_resolve_rejects_a_non_strategy_class():
    with pytest.raises(ConfigError, match="not a SearchStrategy"):
        resolve(dict)  # type: ignore[arg-type]


def test_automation_exports_the_strategies():
    import hpo.automation as automation

    assert automation.RandomSearch is RandomSearch
    assert automation.GridSearch is GridSearch
    assert automation.SearchStrategy is SearchStrategy
    with pytest.raises(AttributeError):
        automation.Nope  # noqa: B018
