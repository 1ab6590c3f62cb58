#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a bounded time each.
#
#   hack/fuzz.sh                 # FUZZTIME=10s per target
#   FUZZTIME=2m hack/fuzz.sh     # longer, e.g. nightly
#   FUZZTIME=500x hack/fuzz.sh   # a fixed number of inputs per target
#   FUZZ_ONLY=Cursor hack/fuzz.sh   # only targets whose name matches
#
# Targets are found with `go test -list '^Fuzz'` in every package; Go fuzzes
# one target per invocation. The checked-in seeds (testdata/fuzz/<Target>/)
# run first as part of each invocation. A failing input is written to
# testdata/fuzz/<Target>/ in its package: the script prints where, and
# `go test -run '<Target>/<file>' ./<pkg>` replays it. Exits non-zero if any
# target fails.
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-10s}"

if [[ -z "${KUBEBUILDER_ASSETS:-}" && -x hack/envtest.sh ]]; then
	# Fuzz targets need no control plane; a package's other tests may, when
	# go test -list builds them.
	KUBEBUILDER_ASSETS="$(hack/envtest.sh 2>/dev/null || true)"
	export KUBEBUILDER_ASSETS
fi

mapfile -t pkgs < <(go list ./...)
failed=()
count=0
start=$SECONDS
for pkg in "${pkgs[@]}"; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	ls "$dir"/*_test.go >/dev/null 2>&1 || continue
	grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
	mapfile -t targets < <(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' | grep -E -- "${FUZZ_ONLY:-.}" || true)
	rel=${dir#"$PWD"/}
	for target in "${targets[@]}"; do
		count=$((count + 1))
		echo "=== fuzz $pkg $target ($FUZZTIME)"
		corpus="$dir/testdata/fuzz/$target"
		before=$(ls "$corpus" 2>/dev/null || true)
		log=$(mktemp)
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$log"; then
			rm -f "$log"
			continue
		fi
		written=$(comm -13 <(echo "$before") <(ls "$corpus" 2>/dev/null || true) | grep -v '^$' || true)
		if [[ -z "$written" ]] && grep -A1 -- "^--- FAIL: $target (" "$log" | grep -qx '    context deadline exceeded' &&
			! grep -q -- "^    --- FAIL: $target/" "$log"; then
			# Go's fuzzing coordinator can report its own -fuzztime deadline
			# as a failure when a loaded machine keeps a worker from
			# stopping in time (go.dev/issue/75804, fixed in Go 1.27). The
			# time was fuzzed and no input failed.
			echo "--- WARN $target: the toolchain reported its fuzztime deadline as a failure (go.dev/issue/75804); no input failed"
			rm -f "$log"
			continue
		fi
		failed+=("$pkg $target")
		if [[ -n "$written" ]]; then
			while read -r f; do
				echo "--- FAIL $target: failing input written to $rel/testdata/fuzz/$target/$f"
				echo "    replay: go test -run '^${target}\$/^${f}\$' ./$rel"
			done <<<"$written"
		else
			echo "--- FAIL $target: no input was written (a seed failed, or the build did); see the output above"
		fi
		rm -f "$log"
	done
done

echo "fuzzed $count targets for $FUZZTIME each in $((SECONDS - start))s"
if ((${#failed[@]} > 0)); then
	printf 'FAILED: %s\n' "${failed[@]}"
	exit 1
fi
