#!/bin/sh
# Builds sidecar's wheel from a source tree and installs it, pinned by the tree's constraints.txt,
# into a fresh virtual environment. The image's builder stage runs exactly this script, and so does
# tests/deploy/test_install.py, so what the test proves is what the image gets.
#
#   install.sh SOURCE_DIR VENV_DIR      (PYTHON selects the interpreter; default python3)
#
# Dependencies come as wheels only (--only-binary): the builder has no compiler, and a dependency
# that would need one should fail here, loudly, rather than half-build. Bytecode is compiled now, so
# that nothing is written under VENV_DIR at run time (the image runs with a read-only root).
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: $0 SOURCE_DIR VENV_DIR" >&2
  exit 2
fi
src=$1
venv=$2
python=${PYTHON:-python3}

if [ ! -f "$src/constraints.txt" ]; then
  echo "$src/constraints.txt is missing: the image installs pinned versions only" >&2
  exit 1
fi

"$python" -m venv "$venv"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT

pip="$venv/bin/python -m pip --disable-pip-version-check --no-input"
$pip wheel --quiet --no-deps --wheel-dir "$wheels" "$src"
$pip install --quiet --only-binary=:all: --constraint "$src/constraints.txt" "$wheels"/sidecar-*.whl
# pip and setuptools have no use at run time: without them the image is smaller and has less to patch.
$pip uninstall --quiet --yes setuptools pip
"$venv/bin/sidecar" --version
