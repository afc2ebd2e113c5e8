"""Benchmarks (`make bench`) and the chaos suite (`make chaos`): instruments, not tests.

Each benchmark starts its own stack of the product on the project's PostgreSQL and RabbitMQ
(bench/harness.py), drives it through the simulators, and writes a result with the commit and the
machine into bench/results/ (bench/results.py).
"""
