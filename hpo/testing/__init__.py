"""hpo.testing: reusable test kits.

``strategy_contract``: a suite any ``SearchStrategy`` (built in or a user's) runs against
in one line; ``simulation``: a simulated agent and clock that drive the real controller
in simulated time, for fast tests and the search-quality benchmark.
"""
