"""Snapshots: a running platform's state and one window's evidence in one versioned SQLite file.

:mod:`.format` (the file and the in-memory :class:`~devbox.snapshot.format.Evidence`),
:mod:`.collect` (read through the platform's HTTP APIs), :mod:`.restore` (bring it back into a
platform with no services, for inspection).
"""
