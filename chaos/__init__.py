"""Chaos run for a SecAuto cluster: real nodes and a real Redis, random crashes, pauses and restarts.

See ``scripts/chaos --help`` and :mod:`chaos.run`.
"""
