"""``devbox why``: rank the likely causes of an alert or a service's trouble across signals.

:mod:`.rank` (pure: signals and scores), :mod:`.gather` (the evidence, through the HTTP API).
"""
