"""Package list only (everything else is in pyproject.toml).

The top-level ``mocks/`` folder (one package per imitated platform system) installs as
``devbox.mocks``, so installing devbox adds exactly one top-level package, ``devbox``, to the
user's environment and ``import mocks`` finds nothing.
"""

from setuptools import find_packages, setup

MOCKS = ["devbox.mocks", *(f"devbox.mocks.{name}" for name in find_packages("mocks"))]

setup(
    packages=[*find_packages(include=["devbox", "devbox.*"]), *MOCKS],
    package_dir={"devbox.mocks": "mocks"},
)
