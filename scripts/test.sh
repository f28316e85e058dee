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
# The tests' shared cache lives outside the clone, so what is slow to make is made once per
# machine: bakeoff's minimal guest kernel (about 10 minutes cold) and, when Rumprun's source is
# at hand (CI keeps it in ../shared/vendor), the Rumprun toolchain (about 25 minutes cold).
export BAKEOFF_TEST_CACHE_DIR="${BAKEOFF_TEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bakeoff-test}"
cargo build -q --locked -p bakeoff-cli
BAKEOFF_CACHE_DIR="$BAKEOFF_TEST_CACHE_DIR" ./target/debug/bakeoff kernel build
rumprun_src="${BAKEOFF_RUMPRUN_SOURCE:-../shared/vendor/rumprun-src.tar.gz}"
if [ -e "$rumprun_src" ]; then
  BAKEOFF_CACHE_DIR="$BAKEOFF_TEST_CACHE_DIR" ./target/debug/bakeoff toolchain build --source "$rumprun_src"
elif [ -z "${BAKEOFF_RUMPRUN_TOOLCHAIN:-}" ]; then
  echo "test.sh: no Rumprun source at $rumprun_src and no BAKEOFF_RUMPRUN_TOOLCHAIN: the Rumprun tests will fail" >&2
fi
cargo test --workspace --locked --no-fail-fast "$@"
