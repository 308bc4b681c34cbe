"""``devbox diff``: what changed between two runs (snapshots, load runs, scenario runs).

:mod:`.profile` (one run's comparable facts), :mod:`.core` (two profiles in, findings out: pure),
:mod:`.stats` (Mann-Whitney U, two-proportion test), :mod:`.render` (table, HTML), :mod:`.budget`
(a scenario's ``budgets:``), :mod:`.run` (a scenario run's evidence step).
"""
