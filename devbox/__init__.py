"""devbox: a platform-in-a-box for microservice developers.

Importing devbox has no side effects: no threads, ports or event loops start at import time.
"""

from __future__ import annotations

__version__ = "0.1.0"
