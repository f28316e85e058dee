#!/bin/sh
# The main job on the example app: installs what is needed, builds examples/hello once for the
# container and the microVM, runs it on Docker, shows the answer from inside, and cleans up.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --locked -q
B=./target/release/bakeoff
PORT=${PORT:-18080}
$B build examples/hello --target oci
$B run examples/hello --on docker -p "127.0.0.1:$PORT:8080" -e GREETING=hello-from-docker --name demo-docker -d
trap '$B rm -f demo-docker >/dev/null 2>&1 || true' EXIT
i=0
until curl -fsS "http://127.0.0.1:$PORT/"; do
  i=$((i + 1)); [ "$i" -lt 100 ] || { echo "demo: no answer from docker" >&2; exit 1; }
  sleep 0.1
done
$B ps
