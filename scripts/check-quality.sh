#!/usr/bin/env bash
# The quality gates of the test command: ruff (lint, pyproject.toml [tool.ruff]) over the
# sources, tests, benches and scripts, and mypy (types, [tool.mypy]: its `files` are the
# package sources). Short output: one line per problem, a summary line per tool. Exits
# non-zero when either finds a problem (both always run, so one run shows everything).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
if ruff check --quiet --output-format concise src tests bench scripts; then
    echo "ruff: clean"
else
    echo "ruff: problems above" >&2
    status=1
fi
if mypy --no-error-summary --hide-error-context --no-pretty; then
    echo "mypy: clean"
else
    echo "mypy: problems above" >&2
    status=1
fi
exit "$status"
