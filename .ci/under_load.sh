#!/usr/bin/env bash
# under_load.sh -- run CI (`bash .ci/run`) N times in a row from fresh clones of this checkout at REF,
# each laid out as CI lays it (<tmp>/main = the clone, <tmp>/shared -> ../shared beside this checkout), with CI=true
# and stdin from /dev/null, while a CPU-heavy load runs beside it.
#
# usage: bash .ci/under_load.sh [options] REF   (from the checkout; CI itself never runs it)
#   REF                 a commit or branch of this checkout (e.g. main, HEAD~1)
#   -n N                number of runs, one after another (default 3)
#   --load-cmd CMD      external load: `bash -c CMD`, started once before the first run in its own
#                       process group (output: <log dir>/load.out), e.g.
#                       --load-cmd 'make reproduce'. It is left running at the end
#                       (its pid is printed) unless --stop-load is given. Each run's line says whether
#                       it was running from the run's start to its end.
#   --busy K            built-in load: K python busy loops (default 2 when there is no --load-cmd,
#                       else 0); stopped at the end. Both loads may be given together.
#   --stop-load         stop the external load's process group at the end too
#   --log-dir DIR       where the logs go (default /tmp/ci-under-load.<date>)
#   --keep              keep every clone (default: a passing run's clone is removed, a failing one
#                       is kept for inspection)
# Writes DIR/summary.log (one line per run, then the overall verdict) and DIR/run-<i>.out (the full
# output of each run). Prints one line per run; exits 1 if any run failed (non-zero exit), else 0.
set -uo pipefail

MAIN=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(cd "$MAIN/../shared" 2>/dev/null && pwd || echo "$MAIN/../shared")
CI_LIMIT_S=5400          # CI's time for one run of .ci/run

n=3 load_cmd="" busy="" stop_load=0 keep=0 log_dir="" ref=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n="$2"; shift 2 ;;
    --load-cmd) load_cmd="$2"; shift 2 ;;
    --busy) busy="$2"; shift 2 ;;
    --stop-load) stop_load=1; shift ;;
    --log-dir) log_dir="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$ref" ] || { echo "error: one REF expected, got '$ref' and '$1'" >&2; exit 2; }
       ref="$1"; shift ;;
  esac
done
[ -n "$ref" ] || { echo "error: REF missing: a commit or branch of $MAIN (see --help)" >&2; exit 2; }
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "error: -n '$n' is not a positive number of runs" >&2; exit 2; }
[ -z "$busy" ] && { [ -n "$load_cmd" ] && busy=0 || busy=2; }
[[ "$busy" =~ ^[0-9]+$ ]] || { echo "error: --busy '$busy' is not a number of processes" >&2; exit 2; }
sha=$(git -C "$MAIN" rev-parse --verify --quiet "$ref^{commit}") || {
  echo "error: '$ref' is not a commit or branch of $MAIN" >&2; exit 2; }
[ -d "$SHARED" ] || { echo "error: $SHARED does not exist (CI puts shared/ beside the clone)" >&2; exit 2; }
log_dir="${log_dir:-/tmp/ci-under-load.$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$log_dir" || exit 2
summary="$log_dir/summary.log"

# The environment CI gives .ci/run: the machine's, without what points into another checkout or venv.
clean_env=(env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV -u CONDA_PREFIX -u CONDA_DEFAULT_ENV)
for v in $(compgen -e | grep '^PAPERLIB_'); do clean_env+=(-u "$v"); done
clean_path=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v '/\.venv/' | paste -sd: -)
clean_env+=(PATH="$clean_path" CI=true)

busy_pids=() load_pid=""
stop_busy() {
  local pid
  for pid in "${busy_pids[@]}"; do kill "$pid" 2>/dev/null; done
  busy_pids=()
}
trap 'stop_busy' EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" | tee -a "$summary"; }
load_alive() { [ -n "$load_pid" ] && kill -0 "$load_pid" 2>/dev/null; }

log "ci_under_load: $n run(s) of bash .ci/run at $ref = $sha ($(git -C "$MAIN" log -1 --format=%s "$sha" | cut -c1-80))"
log "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); logs in $log_dir"

if [ "$busy" -gt 0 ]; then
  for _ in $(seq "$busy"); do
    python3 -c 'while True: pass' </dev/null >/dev/null 2>&1 &
    busy_pids+=($!)
  done
fi
if [ -n "$load_cmd" ]; then
  setsid bash -c "$load_cmd" </dev/null >"$log_dir/load.out" 2>&1 &
  load_pid=$!
fi
log "load: ${busy} built-in busy loop(s)${busy_pids:+ (pids ${busy_pids[*]})}${load_cmd:+; external: $load_cmd (pid $load_pid, process group $load_pid, output $log_dir/load.out)}"
sleep 5   # let the load start before the first run

failed=0
for i in $(seq "$n"); do
  tmp=$(mktemp -d /tmp/ci-load-run.XXXXXX)
  out="$log_dir/run-$i.out"
  ln -s "$SHARED" "$tmp/shared"
  ext_at_start=$(load_alive && echo yes || echo no)
  load_start=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date +%s)
  {
    echo "# run $i/$n: clone of $MAIN at $sha into $tmp/main (shared -> $SHARED), $(date -u)"
    git clone -q --no-hardlinks "$MAIN" "$tmp/main" &&
      { git -C "$tmp/main" cat-file -e "$sha^{commit}" 2>/dev/null ||
          git -C "$tmp/main" fetch -q "$MAIN" "$sha"; } &&
      git -C "$tmp/main" checkout -q -B main "$sha" &&
      (cd "$tmp/main" && "${clean_env[@]}" bash .ci/run </dev/null)
  } >"$out" 2>&1
  rc=$?
  dur=$(( $(date +%s) - start ))
  load_end=$(cut -d' ' -f1 /proc/loadavg)
  ext=""
  if [ -n "$load_cmd" ]; then
    if [ "$ext_at_start" = yes ] && load_alive; then ext="; external load ran throughout"
    else ext="; external load NOT running throughout (at start: $ext_at_start, at end: $(load_alive && echo yes || echo no))"; fi
  fi
  pytest_line=$(grep -aE '[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' "$out" | tail -1 | sed -E 's/^=+ //; s/ =+$//')
  verdict=PASS
  [ "$rc" -eq 0 ] || { verdict=FAIL; failed=$((failed + 1)); }
  over=""; [ "$dur" -le "$CI_LIMIT_S" ] || over=" (over CI's ${CI_LIMIT_S}s)"
  log "run $i/$n: $verdict exit=$rc duration=${dur}s ($(printf '%d:%02d' $((dur / 60)) $((dur % 60))))$over load1 ${load_start}->${load_end}${ext}; pytest: ${pytest_line:-no summary line}; output $out"
  if [ "$rc" -ne 0 ]; then
    grep -aE '^(FAILED|ERROR) ' "$out" | head -20 | sed 's/^/    /' | tee -a "$summary"
  fi
  if [ "$keep" -eq 1 ] || [ "$rc" -ne 0 ]; then
    log "    clone kept: $tmp/main"
  else
    rm -rf "$tmp"
  fi
done

stop_busy
if [ -n "$load_cmd" ]; then
  if load_alive; then
    if [ "$stop_load" -eq 1 ]; then kill -- "-$load_pid" 2>/dev/null; log "external load stopped (process group $load_pid)"
    else log "external load still running: pid $load_pid (output $log_dir/load.out)"; fi
  else
    wait "$load_pid"; log "external load had ended, exit $?"
  fi
fi
log "overall: $((n - failed)) of $n runs passed$([ "$failed" -eq 0 ] || echo "; $failed FAILED")"
[ "$failed" -eq 0 ]
