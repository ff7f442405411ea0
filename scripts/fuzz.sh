#!/usr/bin/env bash
# Coverage-guided fuzzing of one parser (or all) with AFL++ and SharpFuzz; see docs/reliability.md.
#
#   scripts/fuzz.sh TARGET [SECONDS]      TARGET: one of `dotnet run --project fuzz/AdapterSharp.Fuzz -- --list`, or all
#   scripts/fuzz.sh --smoke [SECONDS]     every target for SECONDS (default 5) on its committed corpus: what CI runs
#
# The harness is published to artifacts/fuzz/bin and AdapterSharp.dll / AdapterSharp.Server.dll are instrumented
# there (SharpFuzz rewrites the assemblies so afl-fuzz sees branch coverage). Seeds: fuzz/corpus/TARGET, plus for the
# data readers the first lines of GLUE files from ../shared/datasets (read, not copied into the repository).
# Findings land in artifacts/fuzz/findings/TARGET; each run prints executions, paths and crashes, and replays every
# crash through the harness to print its contract violation. Exit status 1 when a crash or hang was found.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
if [[ "${1:-}" == "--smoke" ]]; then smoke=1; target=all; seconds=${2:-5}
else target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS] | --smoke [SECONDS]}; seconds=${2:-60}; fi

install_afl() {
  echo "fuzz: installing afl++ (Debian package)" >&2
  local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo -n"
  $sudo apt-get install -y --no-install-recommends afl++ >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y --no-install-recommends afl++ >/dev/null 2>&1; }
}
command -v afl-fuzz >/dev/null || install_afl || true

out=artifacts/fuzz
dotnet tool restore >/dev/null
dotnet publish fuzz/AdapterSharp.Fuzz -c Release -o "$out/bin" -v quiet -nologo >/dev/null
# An uninstrumented copy replays findings (instrumented code outside afl-fuzz has no coverage map to write to).
dotnet publish fuzz/AdapterSharp.Fuzz -c Release -o "$out/plain" -v quiet -nologo >/dev/null
for dll in AdapterSharp.dll AdapterSharp.Server.dll; do
  # Instrumenting twice fails; a fresh publish replaced the file if the source changed.
  if [[ ! -f "$out/bin/.$dll.instrumented" || "$out/bin/$dll" -nt "$out/bin/.$dll.instrumented" ]]; then
    dotnet sharpfuzz "$out/bin/$dll" >/dev/null
    touch "$out/bin/.$dll.instrumented"
  fi
done
harness=(dotnet "$out/bin/AdapterSharp.Fuzz.dll")
plain=(dotnet "$out/plain/AdapterSharp.Fuzz.dll")

if [[ "$target" == all ]]; then targets=$("${plain[@]}" --list | awk '{print $1}'); else targets=$target; fi

if ! command -v afl-fuzz >/dev/null; then
  # Where afl++ cannot be installed (no root), the smoke still runs every target on its committed inputs.
  if [[ $smoke -eq 1 ]]; then
    echo "fuzz: afl++ is not available here; replaying each target's committed corpus and regressions only" >&2
    for t in $targets; do
      dirs=(fuzz/corpus/"$t"); [[ -d fuzz/regressions/$t ]] && dirs+=(fuzz/regressions/"$t")
      "${plain[@]}" "$t" --replay "${dirs[@]}"
    done
    exit 0
  fi
  echo "fuzz: afl-fuzz not found and afl++ could not be installed (apt-get install afl++)" >&2
  exit 2
fi

status=0
for t in $targets; do
  seeds="$out/seeds/$t"
  rm -rf "$seeds" && mkdir -p "$seeds"
  cp fuzz/corpus/"$t"/* "$seeds"/
  if [[ -d fuzz/regressions/$t ]]; then cp fuzz/regressions/"$t"/* "$seeds"/; fi
  # Real data as extra seeds for the readers (not in CI's smoke: the committed corpus is what it runs).
  if [[ $smoke -eq 0 && -d ../shared/datasets ]]; then
    case $t in
      tsv) for f in ../shared/datasets/glue/*/dev.tsv; do [[ -f $f ]] && head -c 2000 "$f" > "$seeds/shared-$(basename "$(dirname "$f")").tsv"; done ;;
      tokenizer) for f in ../shared/datasets/glue/*/dev.tsv; do [[ -f $f ]] && sed -n 2,4p "$f" | cut -f1 | head -c 600 > "$seeds/shared-$(basename "$(dirname "$f")").txt"; done ;;
    esac
  fi
  findings="$out/findings/$t"
  rm -rf "$findings" && mkdir -p "$out/findings"
  # The target is `dotnet`, not an AFL-compiled binary (SharpFuzz's fork server speaks AFL's protocol).
  AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
  AFL_FAST_CAL=1 AFL_IGNORE_PROBLEMS=1 \
    timeout $((seconds + 120)) afl-fuzz -i "$seeds" -o "$findings" -V "$seconds" -t 5000 -m none -- "${harness[@]}" "$t" \
    > "$out/afl-$t.log" 2>&1 || { echo "fuzz: afl-fuzz failed for $t (see $out/afl-$t.log)" >&2; tail -20 "$out/afl-$t.log" >&2; status=1; continue; }
  rm -rf /dev/shm/adaptersharp-fuzz-* # the harness processes' scratch folders (afl-fuzz kills them)
  stats="$findings/default/fuzzer_stats"
  value() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
  crashes=$(find "$findings/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
  hangs=$(find "$findings/default/hangs" -type f -name 'id:*' 2>/dev/null | wc -l)
  corpus=$(find "$findings/default/queue" -maxdepth 1 -type f -name 'id:*' | wc -l)
  printf '%-16s %9s execs in %5ss (%s/s), corpus %4s, crashes %s, hangs %s\n' \
    "$t" "$(value execs_done)" "$(value run_time)" "$(value execs_per_sec)" "$corpus" "$crashes" "$hangs"
  if (( crashes + hangs > 0 )); then
    status=1
    "${plain[@]}" "$t" --replay "$findings/default/crashes" "$findings/default/hangs" || true
  fi
done
exit $status
