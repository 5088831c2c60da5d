"""hpo.strategies: the search-strategy base and its implementations (random, grid,
Optuna, BOHB, ASHA). Built by the controller and strategy issues; empty for now."""
