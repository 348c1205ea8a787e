"""The benchmarks, one file per question a user asks: ``python -m benchmarks --help`` (see __main__.py)."""
