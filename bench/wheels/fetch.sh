#!/usr/bin/env bash
# The wheels bench/gpu_check.py needs on the GPU image (Python 3.12, x86-64): the pydantic this
# project pins, and what it imports.
set -euo pipefail
cd "$(dirname "$0")"
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
python -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps -d . \
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" annotated-types typing-extensions \
  typing-inspection
ls -l ./*.whl
