"""Conclave's benchmark suite against Kamailio.

``python -m bench`` (or ``make bench``) deploys both servers on 127.0.0.1,
drives them with the same sipp scenarios in the same run, and writes a
table (stdout), ``bench/results/results.json`` and a latency plot.
See BENCHMARKS.md for the figures and how to reproduce them.
"""
