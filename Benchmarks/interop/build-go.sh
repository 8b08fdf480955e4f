#!/usr/bin/env bash
# Builds, with Debian's Go 1.19 and grpc-go 1.33 in GOPATH mode (no Go module proxy, no network
# beyond apt), into Benchmarks/interop/bin: gatewayload (a grpc-go interop client), gatewayscale
# (the load generator of Benchmarks/gateway-scale.sh) and fetchprobe (the light reader of
# Benchmarks/status-fetch.py).
set -euo pipefail
cd "$(dirname "$0")"

packages=(golang-go golang-google-grpc-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

export GO111MODULE=off GOPATH="$PWD/go:/usr/share/gocode"
case "$(go env GOCACHE 2>/dev/null)" in "" | off) export GOCACHE="$PWD/bin/.gocache" ;; esac
for command in gatewayload gatewayscale fetchprobe; do
  go vet "$command"
  go build -o "bin/$command" "$command"
  echo "built $PWD/bin/$command"
done
