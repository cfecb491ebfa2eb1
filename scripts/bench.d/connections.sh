# scripts/bench.d/connections.sh — the connections scenario of scripts/bench (sourced by it, not
# run): POST /echo over 2,000 keep-alive connections on raw axum (conn-raw) and Cohort embedded
# (conn-embedded), then on the echo baseline's HTTP process A (conn-baseline) and the Cohort
# cluster's (conn-cluster), each pair back to back; the memory of the process serving HTTP at the
# peak of the load and once the connections are gone.

# File descriptors wrk and each server need: the connections, and some to spare.
CONNECTIONS_FDS=4096
# How long after wrk closed its connections the memory left is read.
CONNECTIONS_SETTLE_SECS=2

raise_fd_limit() {
    local hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited || $hard -ge $CONNECTIONS_FDS ]] ||
        die "the connections scenario needs $CONNECTIONS_FDS open files, the hard limit is $hard (ulimit -Hn)"
    ulimit -n "$CONNECTIONS_FDS"
}

ready_connections() { check_answer; }
before_connections() { :; }
parse_connections() { parse_wrk "$1"; }

# Every connection must be admitted and every answer right; then the part of the HTTP process's
# memory that is its code and other mapped files, and, the connections closed, the memory left of
# each process: EXTRA_COLUMNS "kB_A kB_B file_kB_A" ("-" for no second process).
verify_connections() {
    local out=$2 refused non2xx pid after=() files
    refused=$(awk -F'[ ,]+' '/Socket errors:/ { for (i = 1; i < NF; i++) if ($i == "connect") print $(i + 1) }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    if ((${refused:-0} > 0 || ${non2xx:-0} > 0)); then
        FAIL_REASON="${refused:-0} connections refused, ${non2xx:-0} answers not 2xx (wrk output: $out)"
        return 1
    fi
    files=$(proc_kb "${PIDS[0]}" RssFile)
    sleep "$CONNECTIONS_SETTLE_SECS"
    for pid in "${PIDS[@]}"; do after+=("$(proc_kb "$pid" VmRSS)"); done
    EXTRA_COLUMNS="${after[0]:--} ${after[1]:--} ${files:--}"
}

# mb_cell KEY COLUMN — a kB column's median in MB, "-" if none.
mb_cell() {
    local kb
    kb=$(metric "$1" "$2")
    if [[ $kb == - ]]; then echo "-"; else kb_to_mb "$kb"; fi
}

# per_connection_kb KEY — the growth of the HTTP process's memory from before the load to its
# peak, in kB a connection.
per_connection_kb() {
    local connections=${SCENARIO_WRK_ARGS[connections]#*-c}
    awk -v peak="$(metric "$1" 5)" -v before="$(metric "$1" 7)" -v n="$connections" 'BEGIN {
        if (peak == "-" || before == "-") print "-"; else printf "%.1f", (peak - before) / n }'
}

connections_report() {
    local key raw_peak ratio
    raw_peak=$(metric conn-raw 5)
    echo
    echo "### Connections: POST /echo over ${SCENARIO_WRK_ARGS[connections]#*-c} keep-alive connections"
    echo
    echo "wrk ${SCENARIO_WRK_ARGS[connections]} -d${DURATION}s, runs: $RUNS (medians), $(nproc) cores," \
        "load avg at start $LOAD_AT_START, $(date -u '+%Y-%m-%d %H:%M UTC');" \
        "RSS of the process serving HTTP"
    echo
    echo "| contender | req/s | p99 | socket errors | RSS before (MB) | peak RSS (MB) | code and files at the end (MB) | growth a connection (kB) | RSS ${CONNECTIONS_SETTLE_SECS} s after (MB) | peak ÷ raw axum's |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for key in "${CONNECTION_CONTENDERS[@]}"; do
        row_due "$key" 10 || continue
        echo "| ${TITLE[$key]} | $(num "$(metric "$key" 1)" 0) | $(num "$(metric "$key" 3)" 2) ms | $(metric "$key" 4) |" \
            "$(mb_cell "$key" 7) | $(mb_cell "$key" 5) | $(mb_cell "$key" 13) | $(per_connection_kb "$key") |" \
            "$(mb_cell "$key" 11) | $(num "$(div "$(metric "$key" 5)" "$raw_peak")" 2) |"
    done
    echo
    echo "Code and files: the file-backed memory (RssFile in /proc/PID/status) when the load ends," \
        "most of it the binary's code. Growth a connection: (peak − before) ÷ connections."
    echo
    echo "Targets:"
    echo
    for key in conn-embedded conn-cluster; do
        selected "$key" || continue
        ratio=$(div "$(metric "$key" 5)" "$raw_peak")
        check "${TITLE[$key]} peak RSS / raw axum's" "$ratio" "<=" 1.2
    done
    ratio=$(div "$(metric conn-cluster 5)" "$(metric conn-baseline 5)")
    [[ $ratio == - ]] || echo "- ${TITLE[conn-cluster]} peak RSS / ${TITLE[conn-baseline]}: $ratio (no target: the same shape, 2,000 NATS requests in flight)"
}
