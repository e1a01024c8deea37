"""agentwire's benchmarks against AutoGen 0.7.5 (``nox -s bench`` / ``python -m benchmarks``).

Deliberately empty of imports: the AutoGen workload script imports this package from a venv
that has neither agentwire nor the harness's dependencies.
"""
