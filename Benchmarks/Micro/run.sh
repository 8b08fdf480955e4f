#!/usr/bin/env bash
# Runs the micro-benchmarks (package-benchmark's `swift package benchmark`, release build).
# Arguments go to it, e.g. `Benchmarks/Micro/run.sh --filter 'SQLite.*'`. POSTGRES_URL set:
# the PostgreSQL upsert runs too, in schema micro_bench of that database.
set -euo pipefail
cd "$(dirname "$0")"
# package-benchmark 1.38.1 declares ordo-one/swift-runtime-interposer on Swift 6.3, which the
# local mirror lacks: a placeholder of that name resolves it (its trait is off, nothing links).
export RUNTIME_INTERPOSER_LOCAL_PATH="$PWD/Placeholders/swift-runtime-interposer"
exec swift package --disable-sandbox benchmark "$@"
