#!/bin/sh
# The main job on the example app: installs what is needed (docker.io, qemu-system-x86, gcc;
# starts dockerd), builds examples/hello ONCE for the container and the microVM, runs it on
# Docker and on QEMU and shows each answer from inside, then benchmarks both under the same load
# and prints the comparison and the recommended platform; finally serves it behind one address
# and moves it from the container to the microVM while it serves. Everything it starts is removed.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --locked -q
B=./target/release/bakeoff
export BAKEOFF_STATE_DIR="${BAKEOFF_STATE_DIR:-$PWD/target/demo-state}"
cleanup() { for n in demo-docker demo-qemu demo-web; do $B rm -f "$n" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT

echo "== build once, pack for every target"
$B build examples/hello --target all

echo "== run on Docker"
$B run examples/hello --on docker -p 127.0.0.1:18080:8080 -e GREETING=hello-from-docker --name demo-docker -d
curl -fsS http://127.0.0.1:18080/

echo "== run on QEMU (a microVM with bakeoff's own PID 1)"
$B run examples/hello --on qemu -p 127.0.0.1:18081:8080 -e GREETING=hello-from-qemu --name demo-qemu -d
curl -fsS http://127.0.0.1:18081/
$B ps
cleanup

echo "== bake-off: the same load on every platform, then a recommendation"
$B bench examples/hello --on docker,qemu --runs 3 --duration 3 --out target/demo-report
echo "open target/demo-report/report.html for the charts"

echo "== serve behind one address, then switch platforms live"
$B serve examples/hello --port 127.0.0.1:18082 --name demo-web -d -e GREETING=served
curl -fsS http://127.0.0.1:18082/
$B switch demo-web --to qemu
curl -fsS http://127.0.0.1:18082/
$B ps
cleanup
