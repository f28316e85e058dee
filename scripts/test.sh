#!/bin/sh
# The test command: installs the prerequisites (Debian's docker.io, qemu-system-x86, gcc,
# chromium for the report test; kubernetes-validate from PyPI for the k8s export test), starts
# dockerd when it is not running, then runs every test.
# Tests that need an engine fail (not skip) here, because this script provides the engines.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh chromium
# The k8s export test validates its manifests against Kubernetes' schemas, offline.
python3 -c 'import kubernetes_validate' 2>/dev/null ||
  python3 -m pip install -q kubernetes-validate
export BAKEOFF_REQUIRE_ENGINES=1
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -q -- -D warnings
# bakeoff's minimal guest kernel, which the microVM e2e tests boot: built once per machine into
# the tests' shared cache (about 10 minutes on a cold cache, then instant).
BAKEOFF_CACHE_DIR="$PWD/target/test-cache" cargo run -q --locked -p bakeoff-cli -- kernel build
cargo test --workspace --locked --no-fail-fast "$@"
