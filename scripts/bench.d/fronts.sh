# shellcheck shell=bash
# scripts/bench.d/fronts.sh — the fronts scenario (BENCH_ONLY=fronts), sourced by scripts/bench:
# POST /echo on three processes that each serve HTTP, a wrk on each at once, the three sharing the
# echo scenario's threads and connections. Two contenders, run back to back: three hand-written
# baselines (each serves HTTP and answers in the queue group) and three Cohort instances (example
# app, one NATS, one Redis, signed). The rate is the sum over the three, p50 and p99 the worst
# front's.

FRONT_LABELS=(A B C)
FRONT_URLS=()

# front_connections WRK_ARGS... — the connections of those arguments (-cN) split over the fronts,
# the first ones taking the remainder: 64 → 22 21 21.
front_connections() {
    local total i
    total=$(printf '%s\n' "$@" | sed -n 's/^-c//p')
    for i in "${!FRONT_LABELS[@]}"; do
        echo $((total / ${#FRONT_LABELS[@]} + (i < total % ${#FRONT_LABELS[@]} ? 1 : 0)))
    done
}

# start_front RUN NAME LABEL ADDR_VAR PROBE_PATH ENV... -- CMD... — one process serving HTTP on a
# free port (given to it in ADDR_VAR), ready when PROBE_PATH answers 200 (/echo: POST); appended
# to PIDS, LABELS, LOGS and FRONT_URLS.
start_front() {
    local run=$1 name=$2 label=$3 addr_var=$4 probe=$5 port envs=()
    shift 5
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    port=$(free_port)
    local logf=$LOG_DIR/$name-$label-run$run.log url=http://127.0.0.1:$port
    spawn "$logf" env "$addr_var=127.0.0.1:$port" "${envs[@]}" "${PROFILER[@]}" "$@"
    PIDS+=("$SPAWNED_PID") LABELS+=("$label") LOGS+=("$logf") FRONT_URLS+=("$url")
    if [[ $probe == /echo ]]; then
        wait_http "$SPAWNED_PID" POST "$url/echo" "$BODY"
    else
        wait_http "$SPAWNED_PID" GET "$url$probe"
    fi || { FAIL_REASON="$name $label did not answer on $url$probe"; return 1; }
}

start_fronts-baseline() {
    local label
    PIDS=() LABELS=() LOGS=() FRONT_URLS=()
    for label in "${FRONT_LABELS[@]}"; do
        start_front "$1" "${2:-fronts-baseline}" "$label" BENCH_ADDR /echo BENCH_INSTANCE="$label" \
            BENCH_NATS_URL="nats://127.0.0.1:$NATS_PORT" -- "$BIN_DIR/baseline" || return 1
    done
    URL=${FRONT_URLS[0]}
}

start_fronts-cluster() {
    local label
    PIDS=() LABELS=() LOGS=() FRONT_URLS=()
    [[ -z $EXAMPLE_APP_ERROR ]] || { FAIL_REASON=$EXAMPLE_APP_ERROR; return 1; }
    [[ -x $BIN_DIR/example-app ]] || { FAIL_REASON="$BIN_DIR/example-app not built"; return 1; }
    for label in "${FRONT_LABELS[@]}"; do
        start_front "$1" "${2:-fronts-cluster}" "$label" COHORT_HTTP_ADDR /readyz COHORT_NATS_URL="nats://127.0.0.1:$NATS_PORT" \
            COHORT_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" "${SIGNING[@]}" -- "$BIN_DIR/example-app" || return 1
    done
    URL=${FRONT_URLS[0]}
}

# Every front must answer right, not only the first.
ready_fronts() {
    local url
    for url in "${FRONT_URLS[@]}"; do
        URL=$url
        check_answer || return 1
    done
    URL=${FRONT_URLS[0]}
}
before_fronts() { :; }
parse_fronts() { parse_wrk "$1"; }
verify_fronts() { :; }

# wrk_fronts KEY OUTFILE ARGS... — a wrk on each front at once, with its share of the
# connections, each writing OUTFILE-A.txt and so on; OUTFILE gets a summary in wrk's own words
# that parse_wrk and requests_in read: requests and rates summed, the worst front's p50 and p99,
# errors summed.
wrk_fronts() {
    local key=$1 out=$2 args=() i pids=() outs=() conns
    shift 2
    # ARGS carry the echo scenario's -tN -cN: each front gets one thread and its connections.
    for i in "$@"; do [[ $i == -t* || $i == -c* ]] || args+=("$i"); done
    mapfile -t conns < <(front_connections "$@")
    for i in "${!FRONT_URLS[@]}"; do
        if [[ $out == /dev/null ]]; then outs+=(/dev/null); else outs+=("${out%.txt}-${FRONT_LABELS[$i]}.txt"); fi
        spawn "${outs[$i]}" wrk -t1 -c"${conns[$i]}" "${args[@]}" -s "$WORK/echo.lua" "${FRONT_URLS[$i]}/echo"
        pids+=("$SPAWNED_PID")
    done
    for i in "${pids[@]}"; do wait "$i" || true; stop_pid "$i"; done
    [[ $out == /dev/null ]] || fronts_summary "${outs[@]}" >"$out"
}

# fronts_summary WRK_OUTPUT... — the summary of several wrk outputs, in wrk's words.
fronts_summary() {
    local f requests=0 rps=0 p50=0 p99=0 non2xx=0 sock=0 v complete=1
    for f in "$@"; do
        v=$(requests_in "$f")
        requests=$((requests + ${v:-0}))
        v=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
        # A front without figures makes the sum unparsable, so that the contender fails.
        [[ -n $v ]] || complete=0
        rps=$(awk -v a="$rps" -v b="${v:-0}" 'BEGIN { printf "%.2f", a + b }')
        v=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")
        p50=$(awk -v a="$p50" -v b="$v" 'BEGIN { print (b > a) ? b : a }')
        v=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
        p99=$(awk -v a="$p99" -v b="$v" 'BEGIN { print (b > a) ? b : a }')
        non2xx=$((non2xx + $(awk '/Non-2xx or 3xx responses:/ { n = $NF } END { print n + 0 }' "$f")))
        sock=$((sock + $(socket_errors "$f")))
    done
    echo "The fronts together (requests and rates summed, the worst front's latencies; each front's in $(basename "${1%-*}")-*.txt)"
    echo "  $requests requests in total"
    echo "     50%    ${p50}ms"
    echo "     99%    ${p99}ms"
    ((non2xx == 0)) || echo "  Non-2xx or 3xx responses: $non2xx"
    ((sock == 0)) || echo "  Socket errors: connect $sock, read 0, write 0, timeout 0"
    ((complete == 0)) || echo "Requests/sec: $rps"
}

fronts_report() {
    local key base_rps
    base_rps=$(metric fronts-baseline 1)
    echo
    echo "### Three fronts: POST /echo on three processes serving HTTP, a wrk on each"
    echo
    echo "wrk -t1 on each front, connections $(front_connections "${WRK_ARGS[@]}" | paste -sd+) (the echo scenario's" \
        "total), rate summed, p50 and p99 the worst front's; $(conditions)"
    echo
    echo "| contender | req/s (sum) | ratio | p50 | p99 | errors |"
    echo "|---|---:|---:|---:|---:|---:|"
    for key in "${FRONT_CONTENDERS[@]}"; do
        row_due "$key" 6 || continue
        echo "| ${TITLE[$key]} | $(num "$(metric "$key" 1)" 0) | $(num "$(div "$(metric "$key" 1)" "$base_rps")" 2) |" \
            "$(num "$(metric "$key" 2)" 2) ms | $(num "$(metric "$key" 3)" 2) ms | $(metric "$key" 4) |"
    done
    echo
    echo "Targets:"
    echo
    check "fronts: cohort req/s / baseline req/s" "$(div "$(metric fronts-cluster 1)" "$base_rps")" ">=" 0.90
    per_run_ratios fronts-cluster fronts-baseline
}
