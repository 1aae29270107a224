"""Benchmarks behind ``make bench``: one module per part, each exposing ``bench(quick) -> list[dict]``."""
