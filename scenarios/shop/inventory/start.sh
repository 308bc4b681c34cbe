#!/bin/sh
# 123 convention: devbox builds, injects PORT and the platform's addresses, then runs this script.
# exec, so the instance's pid is the service's own and a stop signal reaches it directly.
cd "$(dirname "$0")" && exec "${PYTHON:-python3}" app.py
