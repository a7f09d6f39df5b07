"""Benchmarks (not tests): each script compares segflow with a baseline in the same run and prints ratios."""
