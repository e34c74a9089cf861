#!/usr/bin/env bash
# Coverage-guided fuzzing of what etl reads from others (issue 17), on the stable toolchain:
#   scripts/fuzz.sh install        cargo-fuzz and a C++ compiler (libFuzzer is C++), where missing
#   scripts/fuzz.sh run [SECONDS]  builds fuzz/ once, then runs each target SECONDS (default 15)
#   scripts/fuzz.sh run SECONDS TARGET…  only those targets
# Unoptimised (`--dev`, see fuzz/Cargo.toml): the build is what costs, not the runs.
# cargo-fuzz passes -Z flags, which stable rustc takes only with RUSTC_BOOTSTRAP=1; the sanitizer is
# off (AddressSanitizer would need nightly's std), so a find is a panic, a timeout (-timeout) or
# memory beyond -rss_limit_mb. Each run starts from the corpus kept in fuzz/corpus/TARGET and
# writes what it learns to a scratch copy, so the repository's corpus only changes by hand
# (`cargo fuzz cmin` after a long local run). A crash leaves its input in fuzz/artifacts/TARGET/.
# ETL_FUZZ_TARGET_DIR puts the build elsewhere than fuzz/target, e.g. a cache that outlives a clone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

TARGETS=(validate batch_csv models_project serve_params)

install() {
  if ! command -v c++ >/dev/null; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends g++
  fi
  cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
}

run() {
  local seconds=${1:-15}
  shift || true
  local targets=("$@")
  ((${#targets[@]})) || targets=("${TARGETS[@]}")
  export RUSTC_BOOTSTRAP=1
  local fuzz=(cargo fuzz)
  local build=(--dev --fuzz-dir fuzz --sanitizer none)
  [[ -z ${ETL_FUZZ_TARGET_DIR:-} ]] || build+=(--target-dir "$ETL_FUZZ_TARGET_DIR")
  local started=$SECONDS
  "${fuzz[@]}" build "${build[@]}"
  echo "fuzz build: $((SECONDS - started)) s"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    echo "== fuzzing $target for $seconds s"
    if ! "${fuzz[@]}" run "${build[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
      >"$scratch/$target.log" 2>&1; then
      tail -n 60 "$scratch/$target.log" >&2
      echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/" >&2
      return 1
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)' "$scratch/$target.log" || true
  done
  echo "fuzzing done: $((SECONDS - started)) s"
}

case "${1:-}" in
  install) install ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 install | run [SECONDS [TARGET…]]" >&2; exit 2 ;;
esac
