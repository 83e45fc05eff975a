#!/usr/bin/env bash
# Run every OCI runtime-tools validation program against two runtimes and compare the results.
#
# This script builds nothing and downloads nothing. Point it at an already-built runtime-tools tree
# (the directory holding `runtimetest`, `rootfs-<arch>.tar.gz` and `validation/<name>/<name>.t`):
#
#   RT_VALIDATION_DIR=/path/to/runtime-tools scripts/runtime-tools-compare.sh
#
# Environment:
#   RT_VALIDATION_DIR  (required) built runtime-tools tree (or its validation/ dir)
#   RUNTIME_A          first runtime  (default /usr/bin/runc)
#   RUNTIME_B          second runtime (default <repo>/bin/corral-oci)
#   RT_ONLY            extended regex on "validation/<name>/<name>.t"; run only matching programs
#   RT_TIMEOUT         seconds per program before it is killed and counted broken (default 120)
#   RT_RESULTS         directory for TAP/stderr logs (default: a new temp dir, kept and printed)
#   RT_REUSE_A=1       do not re-run RUNTIME_A; reuse the logs already in $RT_RESULTS/a
#   RT_REUSE_B=1       likewise for RUNTIME_B and $RT_RESULTS/b
#   RT_DIAG_LINES      lines of each differing check's TAP diagnostic to print (default 12, 0 = none)
#
# A program is "broken" when it exits non-zero, times out, prints no TAP at all ("no-tap"), its TAP
# has no plan or a plan that does not match the number of results, or it reports a program-level
# error (a YAML "error" block outside any result, as the lifecycle and hook programs do).
# Note: process_rlimits_fail and process_capabilities_fail print nothing and exit 0 when the
# runtime correctly rejects the bad config, so "no-tap" there means the runtime did the right thing;
# they are still counted as broken, as the upstream harness would see no plan.
#
# Checks are matched between runtimes by program and description (runs of 6+ digits, e.g. random temp names, are normalised; repeated descriptions get
# an occurrence suffix). Checks with no description are matched by their SKIP/TODO text, else number.
#
# Must run as root (the validation programs create containers, cgroups and mounts). The programs
# use the runtime's default state root; each run gets a private TMPDIR that is removed afterwards.
# Exit status: 0 when the comparison ran (whatever the results), 2 on usage errors.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "runtime-tools-compare: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root (the validation programs create containers and cgroups)"
dir=${RT_VALIDATION_DIR:-}
[ -n "$dir" ] || die "set RT_VALIDATION_DIR to an already-built runtime-tools tree (see the header of $0)"
dir=$(cd "$dir" 2>/dev/null && pwd) || die "RT_VALIDATION_DIR=$RT_VALIDATION_DIR is not a directory"
[ "$(basename "$dir")" = validation ] && [ -d "$dir/util" ] && dir=$(dirname "$dir")
[ -d "$dir/validation" ] || die "$dir has no validation/ directory"
[ -x "$dir/runtimetest" ] || die "$dir/runtimetest is missing or not executable (build it first)"
arch=$(uname -m); case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; i?86) arch=386 ;; esac
[ -f "$dir/rootfs-$arch.tar.gz" ] || die "$dir/rootfs-$arch.tar.gz is missing (the programs untar it into each bundle)"

runtime_a=${RUNTIME_A:-/usr/bin/runc}
runtime_b=${RUNTIME_B:-$here/bin/corral-oci}
for r in "$runtime_a" "$runtime_b"; do [ -x "$r" ] || die "runtime $r is not executable"; done
timeout_s=${RT_TIMEOUT:-120}
diag_lines=${RT_DIAG_LINES:-12}
only=${RT_ONLY:-}

mapfile -t programs < <(cd "$dir" && find validation -mindepth 2 -maxdepth 2 -name '*.t' -type f -perm -u+x | sort)
if [ -n "$only" ]; then
  mapfile -t programs < <(printf '%s\n' "${programs[@]}" | grep -E -- "$only" || true)
fi
[ ${#programs[@]} -gt 0 ] || die "no validation programs (*.t) found under $dir/validation${only:+ matching $only}"

results=${RT_RESULTS:-$(mktemp -d /tmp/rt-compare.XXXXXX)}
mkdir -p "$results/a" "$results/b"

# parse_tap LOG PROG -> lines "prog<TAB>key<TAB>result<TAB>lineno", result is ok|notok|skip|todo
parse_tap() {
  awk -v prog="$2" -F'\t' '
    BEGIN { OFS = "\t" }
    /^(not )?ok( |$)/ {
      line = $0; res = "ok"
      if (line ~ /^not ok/) { res = "notok"; sub(/^not ok */, "", line) } else sub(/^ok */, "", line)
      num = line; sub(/[^0-9].*$/, "", num); sub(/^[0-9]+ */, "", line)
      directive = ""
      if (match(line, / *# *(SKIP|skip|TODO|todo)/)) {
        directive = substr(line, RSTART); line = substr(line, 1, RSTART - 1)
        if (directive ~ /SKIP|skip/) { if (res == "ok") res = "skip" } else res = "todo"
      }
      sub(/^- */, "", line); sub(/ +$/, "", line)
      desc = line
      if (desc == "") { desc = directive; sub(/^ +/, "", desc) }
      if (desc == "") desc = "#" num
      gsub(/[0-9][0-9][0-9][0-9][0-9][0-9]+/, "N", desc)
      gsub(/\t/, " ", desc)
      seen[desc]++
      key = seen[desc] > 1 ? desc " [" seen[desc] "]" : desc
      print prog, key, res, NR
    }' "$1"
}

# The fixed cgroup names the validation programs use, in every mounted hierarchy, sorted.
cgroup_dirs() {
  local d
  for d in /sys/fs/cgroup/cgrouptest /sys/fs/cgroup/testdir /sys/fs/cgroup/*/cgrouptest /sys/fs/cgroup/*/testdir; do
    [ -d "$d" ] && echo "$d"
  done | sort
}

# run_all SIDE RUNTIME: runs every program, writes $results/SIDE/{<prog>.tap,<prog>.err,<prog>.rc,<prog>.secs}
run_all() {
  local side=$1 rt=$2 p name rc start tmp
  echo "== running ${#programs[@]} programs against $rt" >&2
  for p in "${programs[@]}"; do
    name=$(basename "$p" .t)
    tmp=$(mktemp -d "/tmp/rt-compare-tmp.$side.XXXXXX")
    cg_before=$(cgroup_dirs)
    start=$(date +%s.%N)
    (cd "$dir" && TMPDIR="$tmp" RUNTIME="$rt" timeout --kill-after=10 "$timeout_s" "./$p" \
      >"$results/$side/$name.tap" 2>"$results/$side/$name.err" </dev/null)
    rc=$?
    echo "$rc" >"$results/$side/$name.rc"
    awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", e - s }' >"$results/$side/$name.secs"
    if grep -q " $tmp/" /proc/self/mountinfo; then
      # e.g. a test that shares the host mount namespace: the runtime's rootfs mounts land in ours.
      echo "   note: $name left mounts under its private TMPDIR; unmounting them:" >&2
      awk -v t="$tmp/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
        echo "     $m" >&2; umount -l "$m" 2>/dev/null || true
      done
    fi
    # The programs use fixed cgroup names (cgrouptest, testdir/cgrouptest); a failed create can
    # leave them behind. Remove the ones this program created, if they hold no process.
    comm -13 <(echo "$cg_before") <(cgroup_dirs) | sort -r | while read -r d; do
      [ -n "$d" ] || continue
      if [ -s "$d/cgroup.procs" ] || ! find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; then
        echo "   WARNING: $name left cgroup $d (not removed)" >&2
      else
        echo "   note: $name left cgroup $d; removed" >&2
      fi
    done
    if grep -q " $tmp/" /proc/self/mountinfo; then
      echo "   WARNING: mounts remain under $tmp; not removing it" >&2
    else
      rm -rf --one-file-system "$tmp"
    fi
    printf '   %-45s rc=%-3s %6ss\n' "$name" "$rc" "$(cat "$results/$side/$name.secs")" >&2
  done
}

for side in a b; do
  if [ "$side" = a ]; then reuse=${RT_REUSE_A:-0} rt=$runtime_a; else reuse=${RT_REUSE_B:-0} rt=$runtime_b; fi
  if [ "$reuse" = 1 ]; then
    for p in "${programs[@]}"; do
      [ -f "$results/$side/$(basename "$p" .t).rc" ] ||
        die "reuse requested but $results/$side has no log for $(basename "$p" .t)"
    done
    echo "== reusing logs for $rt from $results/$side" >&2
  else
    run_all "$side" "$rt"
  fi
done

# summarise SIDE -> per-program TSV "name ok notok skip status" into $results/SIDE.summary, checks into SIDE.checks
summarise() {
  local side=$1 p name rc plan nres status
  : >"$results/$side.summary"; : >"$results/$side.checks"
  for p in "${programs[@]}"; do
    name=$(basename "$p" .t)
    parse_tap "$results/$side/$name.tap" "$name" >>"$results/$side.checks"
    rc=$(cat "$results/$side/$name.rc")
    plan=$(grep -m1 -oE '^1\.\.[0-9]+' "$results/$side/$name.tap" | cut -d. -f3)
    nres=$(grep -cE '^(not )?ok( |$)' "$results/$side/$name.tap")
    # A YAML block with an "error" key that follows no result line is a program-level error (the
    # lifecycle and hook programs report their failures that way, with no "not ok" line).
    nerr=$(awk '
      /^TAP version/ || /^1\.\./ { prev = "boundary"; next }
      /^(not )?ok( |$)/ { prev = "result"; next }
      /^  ---$/ { standalone = (prev == "boundary"); inyaml = 1; next }
      /^  \.\.\.$/ { inyaml = 0; prev = "boundary"; next }
      inyaml && standalone && /^    "error": / { n++; standalone = 0 }
      END { print n + 0 }' "$results/$side/$name.tap")
    status=ok
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="broken(timeout)"
    elif [ "$rc" != 0 ]; then status="broken(rc=$rc)"
    elif [ ! -s "$results/$side/$name.tap" ]; then status="broken(no-tap)"
    elif [ -z "$plan" ]; then status="broken(no-plan)"
    elif [ "$plan" != "$nres" ]; then status="broken(plan=$plan,got=$nres)"
    elif [ "$nerr" -gt 0 ]; then status="broken(error)"
    fi
    awk -F'\t' -v n="$name" -v st="$status" '
      $1 == n { c[$3]++ }
      END { printf "%s\t%d\t%d\t%d\t%s\n", n, c["ok"] + c["skip"], c["notok"], c["skip"], st }' \
      "$results/$side.checks" >>"$results/$side.summary"
  done
}
summarise a
summarise b

echo
echo "A = $runtime_a ($("$runtime_a" --version 2>/dev/null | head -1))"
echo "B = $runtime_b"
echo "logs: $results/{a,b}/<program>.{tap,err,rc}"
echo
printf '%-40s | %5s %6s %4s %-22s | %5s %6s %4s %-22s\n' program "A ok" notok skip "A status" "B ok" notok skip "B status"
printf '%.0s-' {1..128}; echo
join -t $'\t' "$results/a.summary" "$results/b.summary" | awk -F'\t' '
  { mark = ($2 != $6 || $3 != $7 || $5 != $9) ? " *" : ""
    printf "%-40s | %5d %6d %4d %-22s | %5d %6d %4d %-22s%s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, mark }'
printf '%.0s-' {1..128}; echo
totals() { awk -F'\t' '{ ok += $2; no += $3; sk += $4; if ($5 != "ok") br++ }
  END { printf "%d ok (%d of them skip), %d not ok, %d programs broken of %d", ok, sk, no, br, NR }' "$1"; }
echo "TOTAL A: $(totals "$results/a.summary")"
echo "TOTAL B: $(totals "$results/b.summary")"

# Checks one side passes (ok or skip) and the other fails or never reported.
diff_checks() {
  local from=$1 to=$2 label=$3 tolabel=$4
  awk -F'\t' -v OFS='\t' '
    FNR == NR { r[$1 SUBSEP $2] = $3; next }
    ($3 == "ok" || $3 == "skip") {
      k = $1 SUBSEP $2
      if (!(k in r)) print $1, $2, "missing", ""
      else if (r[k] == "notok") print $1, $2, "notok", k
    }' "$results/$to.checks" "$results/$from.checks" >"$results/$from-not-$to.diff"
  local n_fail n_miss
  n_fail=$(awk -F'\t' '$3 == "notok"' "$results/$from-not-$to.diff" | wc -l)
  n_miss=$(awk -F'\t' '$3 == "missing"' "$results/$from-not-$to.diff" | wc -l)
  echo
  echo "== checks $label passes and $tolabel fails: $n_fail (plus $n_miss $tolabel never reported)"
  awk -F'\t' '$3 == "notok" { print $1 "\t" $2 }' "$results/$from-not-$to.diff" | while IFS=$'\t' read -r prog key; do
    echo "  [$prog] $key"
    if [ "$diag_lines" -gt 0 ]; then
      lineno=$(awk -F'\t' -v p="$prog" -v k="$key" '$1 == p && $2 == k { print $4; exit }' "$results/$to.checks")
      [ -n "$lineno" ] && awk -v s="$lineno" -v m="$diag_lines" '
        NR > s && /^(not )?ok( |$)|^1\.\./ { exit }
        NR > s && n < m && !/^ *(---|\.\.\.)$/ { print "      " substr($0, 1, 220) (length($0) > 220 ? " ..." : ""); n++ }' "$results/$to/$prog.tap"
    fi
  done
  if [ "$n_miss" -gt 0 ]; then
    echo "  -- never reported by $tolabel (per program; see its .err log):"
    awk -F'\t' '$3 == "missing" { c[$1]++ } END { for (p in c) printf "  [%s] %d checks\n", p, c[p] }' \
      "$results/$from-not-$to.diff" | sort
  fi
}
diff_checks a b A B
diff_checks b a B A

echo
echo "== programs broken under one runtime only"
join -t $'\t' "$results/a.summary" "$results/b.summary" | awk -F'\t' '
  ($5 == "ok") != ($9 == "ok") { printf "  %-40s A: %-22s B: %s\n", $1, $5, $9 }'
join -t $'\t' "$results/a.summary" "$results/b.summary" | awk -F'\t' '($5 == "ok") != ($9 == "ok") { print $1 }' |
  while read -r prog; do
    for side in a b; do
      errline=$(grep -m1 '^    "error": ' "$results/$side/$prog.tap" | cut -c1-300)
      case $(awk -F'\t' -v p="$prog" '$1 == p { print $5 }' "$results/$side.summary") in
        "broken(error)") echo "  [$prog] $side program-level error: ${errline#    }" ;;
      esac
      if [ -s "$results/$side/$prog.err" ]; then
        echo "  [$prog] $side stderr: $(tail -n 3 "$results/$side/$prog.err" | tr '\n' ' ' | cut -c1-300)"
      fi
    done
  done
exit 0
