#!/usr/bin/env bash
# Compiles the router to C with mypyc, in place (setup.py says why). Needs a C compiler and Python's headers:
# installs gcc when root with apt-get and it is missing. Without a compiler the router runs as plain Python,
# slower, with a warning; under PORTERO_REQUIRE_ALL=1 (CI) that is an error. PORTERO_COMPILE=0 skips compiling.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

remove_builds() { find src -maxdepth 3 -name '*.so' -path 'src/portero*' -delete; }

if [ "${PORTERO_COMPILE:-1}" = "0" ]; then
  remove_builds
  echo "compile-router: PORTERO_COMPILE=0, the router runs as plain Python"
  exit 0
fi

if ! command -v gcc >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "compile-router: installing gcc"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
  fi
fi

include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
if ! command -v gcc >/dev/null 2>&1 || [ ! -f "$include/Python.h" ]; then
  remove_builds
  message="compile-router: no C compiler or no Python.h in $include; the router runs as plain Python (slower)"
  if [ "${PORTERO_REQUIRE_ALL:-}" = "1" ]; then
    echo "$message; PORTERO_REQUIRE_ALL=1 makes that an error" >&2
    exit 1
  fi
  echo "WARNING: $message" >&2
  exit 0
fi

echo "compile-router: compiling src/portero/router with mypyc (about a minute)"
"$PYTHON" setup.py --quiet build_ext --inplace
# build_ext copies the modules with their build times, which can predate a source touched meanwhile: the router's
# import check compares those times, so the copies get the time of this build.
find src -maxdepth 3 -name '*.so' -path 'src/portero*' -exec touch {} +
# Fail loudly if a module did not come out: a half-compiled router would mix old and new code.
for source in src/portero/router/*.py; do
  case "$source" in */__init__.py) continue ;; esac
  ls "${source%.py}".cpython-*.so >/dev/null 2>&1 || { echo "compile-router: $source was not compiled" >&2; exit 1; }
done
