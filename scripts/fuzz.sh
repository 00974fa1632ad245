#!/usr/bin/env bash
# Fuzzes kbuild's parsers of untrusted bytes with libFuzzer (see fuzz/README.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   build, then run each target in turn (default 120 s, all)
#   scripts/fuzz.sh --list                              the targets
#   scripts/fuzz.sh --build-only [TARGET...]            build only
#   scripts/fuzz.sh --grow-corpus [SECONDS] [TARGET...] also merge what the run found into fuzz/corpus/TARGET
#   scripts/fuzz.sh --keep-going [SECONDS] [TARGET...]  go on after a crash (libFuzzer -fork=1), collecting every one
#
# Everything is built and run under .build-fuzz/ (gitignored; FUZZ_DIR to move
# it): compiled with swiftc straight from the real source files listed in
# MODULES below, never with `swift build`, so it can run beside a build of the
# package. libFuzzer reads fuzz/corpus/TARGET and writes what it finds to a
# scratch dir, never to fuzz/corpus (unless --grow-corpus). Crash inputs stay in
# .build-fuzz/crashes/TARGET/, logs in .build-fuzz/logs/TARGET.log.
# Exit status: 0 all clean, 1 a target crashed (or timed out, or ran out of
# memory), 2 the build failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${FUZZ_DIR:-$ROOT/.build-fuzz}
SWIFTC=${SWIFTC:-$(command -v swiftc || echo /opt/swift/usr/bin/swiftc)}
CLANG=${CLANG:-$(dirname "$SWIFTC")/clang}
# SwiftNIO's sources, for NIOConcurrencyHelpers (the Router's only import among the files fuzzed).
NIO=${FUZZ_NIO_DIR:-$ROOT/.build/checkouts/swift-nio}
# Yams' sources (libyaml and its Swift API), which BuildFiles reads bin/release with.
YAMS=${FUZZ_YAMS_DIR:-$ROOT/.build/checkouts/Yams}
# address: Swift traps on bounds and overflow by itself; ASan adds the unsafe-pointer code.
SANITIZE=${FUZZ_SANITIZE:-fuzzer,address}

# The modules the targets link: NAME|DEPENDENCIES|SOURCE FILES (relative to the repo).
# The Sources/ files are the shipped code, compiled as the module they belong
# to; fuzz/support/ holds only stand-ins for what those files need but does not
# parse (swift-crypto's SHA256 and the AppStore namespace).
MODULES=(
    "KbuildCore|Crypto|Sources/KbuildCore/*.swift"
    "KbuildState|KbuildCore|Sources/KbuildState/RefName.swift Sources/KbuildState/Records/ReleaseRecords.swift Sources/KbuildState/Records/ImageFormat.swift"
    "Builds|KbuildCore Yams|Sources/Builds/BuildFiles.swift"
    "Releases|KbuildCore KbuildState Builds|Sources/Releases/AppJSON.swift Sources/Releases/FormationChange.swift Sources/Releases/ConfigVars.swift"
    "GitGateway|KbuildCore|Sources/GitGateway/GitShell.swift Sources/GitGateway/AppStore+Name.swift fuzz/support/GitGateway/AppStore.swift"
    "KbuildServer||Sources/KbuildServer/ByteRange.swift Sources/KbuildServer/RegistryInput.swift"
    "Router|NIOConcurrencyHelpers|Sources/Router/RouteTable.swift Sources/Router/Route.swift Sources/Router/Endpoint.swift Sources/Router/RequestIdentity.swift"
    "Cluster||Sources/Cluster/LogLine.swift"
)
# Dependencies compiled without coverage: they are not what is fuzzed.
declare -A SUPPORT_DEPS=([Crypto]="" [NIOConcurrencyHelpers]="CNIOAtomics" [CNIOAtomics]="" [Yams]="CYaml" [CYaml]="")

STRICT=(-swift-version 6 -enable-upcoming-feature ExistentialAny -enable-upcoming-feature InternalImportsByDefault)

usage() { sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }

seconds=120 build_only=0 grow=0 list=0 keep_going=0
targets=()
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --list) list=1 ;;
        --build-only) build_only=1 ;;
        --grow-corpus) grow=1 ;;
        --keep-going) keep_going=1 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *)
            if [[ $1 =~ ^[0-9]+$ ]] && ((${#targets[@]} == 0)) && [[ ! -f $ROOT/fuzz/targets/$1.swift ]]; then
                seconds=$1
            else
                targets+=("$1")
            fi
            ;;
    esac
    shift
done

all_targets=()
for f in "$ROOT"/fuzz/targets/*.swift; do all_targets+=("$(basename "$f" .swift)"); done
if ((list)); then printf '%s\n' "${all_targets[@]}"; exit 0; fi
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ -f $ROOT/fuzz/targets/$t.swift ]] || { echo "fuzz.sh: no target $t (fuzz.sh --list)" >&2; exit 2; }
done

MODS=$OUT/modules OBJS=$OUT/objects BIN=$OUT/bin
mkdir -p "$MODS" "$OBJS" "$BIN" "$OUT/logs" "$OUT/crashes" "$OUT/run"
ATOMICS_MAP=$OUT/modules/CNIOAtomics.modulemap
XCC=(-Xcc "-fmodule-map-file=$ATOMICS_MAP" -Xcc "-fmodule-map-file=$YAMS/Sources/CYaml/include/module.modulemap" -Xcc -DYAML_DECLARE_STATIC
     -Xcc -I -Xcc "$YAMS/Sources/CYaml/include")

declare -A MOD_DEPS MOD_FILES
for m in "${MODULES[@]}"; do
    IFS='|' read -r name deps files <<<"$m"
    MOD_DEPS[$name]=$deps
    MOD_FILES[$name]=$files
done

# A build step runs only when its inputs or flags changed (a stamp of their hashes).
fresh() { # STAMP KEY OUTPUT
    [[ -f $1 && -f $3 && $(cat "$1") == "$2" ]]
}
key_of() { # FILES... → a hash of the compiler, flags and file contents
    { "$SWIFTC" --version 2>&1; echo "$SANITIZE ${STRICT[*]}"; cat "$@"; } | sha256sum | cut -d' ' -f1
}

build_support() {
    if [[ ! -d $NIO/Sources/NIOConcurrencyHelpers ]]; then
        echo "fuzz.sh: $NIO has no SwiftNIO sources: resolve the package first (swift package resolve), or set FUZZ_NIO_DIR" >&2
        return 1
    fi
    local key
    key=$(key_of "$ROOT/fuzz/support/Crypto/SHA256.swift")
    if ! fresh "$OBJS/Crypto.stamp" "$key" "$OBJS/Crypto.o"; then
        echo "  Crypto (stand-in)"
        "$SWIFTC" "${STRICT[@]}" -warnings-as-errors -parse-as-library -O -wmo -module-name Crypto \
            -emit-module -emit-module-path "$MODS/Crypto.swiftmodule" \
            -c "$ROOT/fuzz/support/Crypto/SHA256.swift" -o "$OBJS/Crypto.o" || return 1
        echo "$key" >"$OBJS/Crypto.stamp"
    fi
    printf 'module CNIOAtomics {\n    header "%s"\n    export *\n}\n' "$NIO/Sources/CNIOAtomics/include/CNIOAtomics.h" >"$ATOMICS_MAP.new"
    cmp -s "$ATOMICS_MAP.new" "$ATOMICS_MAP" || mv "$ATOMICS_MAP.new" "$ATOMICS_MAP"
    rm -f "$ATOMICS_MAP.new"
    key=$(key_of "$NIO"/Sources/CNIOAtomics/src/*.c "$NIO"/Sources/CNIOAtomics/include/*.h "$NIO"/Sources/NIOConcurrencyHelpers/*.swift)
    if ! fresh "$OBJS/NIOConcurrencyHelpers.stamp" "$key" "$OBJS/NIOConcurrencyHelpers.o"; then
        echo "  NIOConcurrencyHelpers (from $NIO)"
        local c
        for c in "$NIO"/Sources/CNIOAtomics/src/*.c; do
            "$CLANG" -O2 -fPIC -I "$NIO/Sources/CNIOAtomics/include" -c "$c" -o "$OBJS/CNIOAtomics-$(basename "$c" .c).o" || return 1
        done
        "$SWIFTC" -swift-version 5 -suppress-warnings -package-name swift_nio -parse-as-library -O -wmo -module-name NIOConcurrencyHelpers "${XCC[@]}" \
            -emit-module -emit-module-path "$MODS/NIOConcurrencyHelpers.swiftmodule" \
            -c "$NIO"/Sources/NIOConcurrencyHelpers/*.swift -o "$OBJS/NIOConcurrencyHelpers.o" || return 1
        echo "$key" >"$OBJS/NIOConcurrencyHelpers.stamp"
    fi
    if [[ ! -d $YAMS/Sources/Yams ]]; then
        echo "fuzz.sh: $YAMS has no Yams sources: resolve the package first (swift package resolve), or set FUZZ_YAMS_DIR" >&2
        return 1
    fi
    key=$(key_of "$YAMS"/Sources/CYaml/src/*.c "$YAMS"/Sources/CYaml/include/*.h "$YAMS"/Sources/Yams/*.swift)
    if ! fresh "$OBJS/Yams.stamp" "$key" "$OBJS/Yams.o"; then
        echo "  Yams (from $YAMS)"
        local y
        for y in "$YAMS"/Sources/CYaml/src/*.c; do
            "$CLANG" -O2 -fPIC -DYAML_DECLARE_STATIC -I "$YAMS/Sources/CYaml/include" -c "$y" -o "$OBJS/CYaml-$(basename "$y" .c).o" || return 1
        done
        "$SWIFTC" -swift-version 5 -suppress-warnings -parse-as-library -O -wmo -module-name Yams -DSWIFT_PACKAGE "${XCC[@]}" \
            -emit-module -emit-module-path "$MODS/Yams.swiftmodule" \
            -c "$YAMS"/Sources/Yams/*.swift -o "$OBJS/Yams.o" || return 1
        echo "$key" >"$OBJS/Yams.stamp"
    fi
}

declare -A BUILT
build_module() { # NAME: compiled with coverage, as its own module, after its dependencies
    local name=$1
    [[ -n ${BUILT[$name]:-} ]] && return 0
    [[ -n ${SUPPORT_DEPS[$name]+x} ]] && { BUILT[$name]=1; return 0; }
    local dep
    for dep in ${MOD_DEPS[$name]}; do build_module "$dep" || return 1; done
    local files=() f
    for f in ${MOD_FILES[$name]}; do
        for f in $ROOT/$f; do
            [[ -f $f ]] || { echo "fuzz.sh: module $name: no file $f" >&2; return 1; }
            files+=("$f")
        done
    done
    local stamps=()
    for dep in ${MOD_DEPS[$name]}; do stamps+=("$OBJS/$dep.stamp"); done
    local key
    key=$(key_of "${files[@]}" "${stamps[@]}")
    if ! fresh "$OBJS/$name.stamp" "$key" "$OBJS/$name.o"; then
        echo "  $name (${#files[@]} files)"
        "$SWIFTC" "${STRICT[@]}" -warnings-as-errors -parse-as-library -O -wmo -enable-testing -sanitize="$SANITIZE" \
            -module-name "$name" -I "$MODS" "${XCC[@]}" \
            -emit-module -emit-module-path "$MODS/$name.swiftmodule" \
            -c "${files[@]}" -o "$OBJS/$name.o" || return 1
        echo "$key" >"$OBJS/$name.stamp"
    fi
    BUILT[$name]=1
}

objects_of() { # MODULE... → the object files of them and everything they need, once each
    local -A seen=()
    local order=()
    visit() {
        local m=$1 d
        [[ -n ${seen[$m]:-} ]] && return
        seen[$m]=1
        if [[ -n ${SUPPORT_DEPS[$m]+x} ]]; then
            for d in ${SUPPORT_DEPS[$m]}; do visit "$d"; done
        else
            for d in ${MOD_DEPS[$m]}; do visit "$d"; done
        fi
        order+=("$m")
    }
    local m
    for m in "$@"; do visit "$m"; done
    for m in "${order[@]}"; do
        if [[ $m == CNIOAtomics || $m == CYaml ]]; then
            printf '%s\n' "$OBJS"/"$m"-*.o
        else
            echo "$OBJS/$m.o"
        fi
    done
}

# A target names the modules it needs on a line `// fuzz-modules: A B`.
target_modules() { sed -n 's|^// fuzz-modules: *||p' "$ROOT/fuzz/targets/$1.swift" | head -1; }

build_target() {
    local name=$1 modules m
    modules=$(target_modules "$name")
    [[ -n $modules ]] || { echo "fuzz.sh: fuzz/targets/$name.swift has no '// fuzz-modules:' line" >&2; return 1; }
    for m in $modules; do build_module "$m" || return 1; done
    local objects=()
    mapfile -t objects < <(objects_of $modules)
    local stamps=()
    for m in $modules; do stamps+=("$OBJS/$m.stamp"); done
    local key
    key=$(key_of "$ROOT/fuzz/targets/$name.swift" "$ROOT/fuzz/support/Fuzz.swift" "${stamps[@]}")
    if ! fresh "$BIN/$name.stamp" "$key" "$BIN/$name"; then
        echo "  target $name"
        "$SWIFTC" "${STRICT[@]}" -warnings-as-errors -parse-as-library -O -sanitize="$SANITIZE" -use-ld=lld \
            -module-name "$(echo "$name" | tr -c 'A-Za-z0-9\n' '_')_fuzz" -I "$MODS" "${XCC[@]}" \
            "$ROOT/fuzz/targets/$name.swift" "$ROOT/fuzz/support/Fuzz.swift" "${objects[@]}" -o "$BIN/$name" || return 1
        echo "$key" >"$BIN/$name.stamp"
    fi
}

echo "Building under $OUT"
build_support || { echo "fuzz.sh: build failed" >&2; exit 2; }
for t in "${targets[@]}"; do
    build_target "$t" || { echo "fuzz.sh: build of $t failed" >&2; exit 2; }
done
((build_only)) && exit 0

# One at a time: each target gets a core, the machine keeps the other.
results=()
crashed=0
for t in "${targets[@]}"; do
    corpus=$ROOT/fuzz/corpus/$t
    mkdir -p "$corpus"
    scratch=$OUT/run/$t
    rm -rf "$scratch"
    mkdir -p "$scratch"
    crashes=$OUT/crashes/$t
    mkdir -p "$crashes"
    marker=$scratch/.started
    touch "$marker"
    extra=()
    ((keep_going)) && extra=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    dict=()
    [[ -f $ROOT/fuzz/dicts/$t.dict ]] && dict=(-dict="$ROOT/fuzz/dicts/$t.dict")
    log=$OUT/logs/$t.log
    echo "Fuzzing $t for ${seconds}s (log: $log)"
    # New inputs go to the scratch dir (the first); fuzz/corpus/$t is only read.
    # Swift's own backtracer off: libFuzzer and ASan print the stack (and the two clash).
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} \
        "$BIN/$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -detect_leaks=0 \
        -artifact_prefix="$crashes/" "${extra[@]}" "${dict[@]}" "$scratch" "$corpus" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [[ -n $runs ]] || runs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    artifacts=$(find "$crashes" -type f -newer "$marker" | sort)
    if ((rc == 0)) && [[ -z $artifacts ]]; then
        result=ok
        if ((grow)); then
            SWIFT_BACKTRACE=enable=no "$BIN/$t" -merge=1 -detect_leaks=0 "$corpus" "$scratch" >>"$log" 2>&1 && result="ok, corpus merged"
        fi
    else
        crashed=1
        first=$(echo "$artifacts" | head -1)
        kind=$(basename "$first" | cut -d- -f1)
        count=$(echo "$artifacts" | grep -c .)
        if ((count > 1)); then
            result="FAILED (${kind}): $count inputs in $crashes/, e.g. $(basename "$first")"
        else
            result="FAILED (${kind:-exit $rc}): ${first:-see $log}"
        fi
        # The stack, as the log has it.
        grep -m1 -B2 -A25 -E 'ERROR: libFuzzer|ERROR: AddressSanitizer|Fatal error|contract broken|ALARM' "$log" | sed 's/^/    /' | head -40
    fi
    results+=("$(printf '%-18s %12s %9s %6s %7s %6s  %s' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")")
done

echo
printf '%-18s %12s %9s %6s %7s %6s  %s\n' target runs exec/s cov ft corpus result
printf '%s\n' "${results[@]}"
exit $crashed
