"""Schedules: definitions (:mod:`.spec`), slot times with time zones, DST and jitter (:mod:`.timing`),
what the leader does with due slots (:mod:`.plan`), and stored definitions and their jobs
(:mod:`.definition`). Pure Python: the Redis side is :mod:`secauto.store.schedules`, the firing is
``actors/scheduler.py``."""
