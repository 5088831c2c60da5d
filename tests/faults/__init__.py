"""Fault injection for the reliability suite (tests/test_faults.py) and its benchmark
(bench/faults.py): a TCP proxy the test can cut (``proxy``), a private Redis server it
can restart (``services``), and one real optimization run through both, measured from
the store (``harness``). docs/reliability.md shows the figures."""
