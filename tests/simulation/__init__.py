"""A deterministic, fault-injecting simulation of the whole service (issue 24, part B).

One seeded scheduler interleaves the real use cases at the granularity of port calls; see runner.py.
"""
