# shellcheck shell=bash
# scripts/bench.d/events.sh — the events benchmark (BENCH_ONLY=events), sourced by scripts/bench.
#
# An event goes from one process to another through JetStream and is applied once: Cohort (`emit`
# on instance A, a subscription on instance B whose unit of work records the event's marker and
# its effect in one step), against the same by hand (bench/src/bin/events_baseline.rs: an acked
# async-nats publisher, and a pull consumer whose one Lua script records the event id and applies
# the effect), and the hand-written pair without Redis (the ceiling: publish and ack only). Each
# contender runs on a fresh nats-server and redis-server, and is measured twice a run: at
# saturation (emits as fast as JetStream acks them, BENCH_DURATION seconds) and at a fixed rate
# (BENCH_EVENTS_RATE a second, as long). A run counts only if the effect counter grew by exactly the
# number of events emitted.
#
# Env: BENCH_EVENTS_RATE (default 5000) events a second of the fixed-rate phase;
# BENCH_EVENTS_CONCURRENCY (default 64) publishes awaiting their ack at once.

EVENT_CONTENDERS=(events-hand events-cohort events-bare)
ALL_CONTENDERS+=("${EVENT_CONTENDERS[@]}")
PAIRS+=("events-hand events-cohort" "events-bare")
SCENARIO_OF+=([events-hand]=events [events-cohort]=events [events-bare]=events)
TITLE+=(
    [events-hand]="hand-written: async-nats + Redis script"
    [events-cohort]="cohort: emit -> subscription, unit of work$([[ $UNSIGNED == 1 ]] && echo ', unsigned' || echo ', signed')"
    [events-bare]="bare JetStream (ceiling): publish, pull, ack"
)
EVENTS_RATE=${BENCH_EVENTS_RATE:-5000}
EVENTS_CONCURRENCY=${BENCH_EVENTS_CONCURRENCY:-64}
# A phase gives up when no event was applied for this long (a saturated run drains its backlog
# first, which can take longer than its emitting did).
EVENTS_STALL_SECS=10

events_selected() {
    local key
    for key in "${EVENT_CONTENDERS[@]}"; do selected "$key" && return 0; done
    return 1
}

EMIT_URL="" STATS_URL=""

# events_servers — a new nats-server and redis-server with empty stores, so that no contender
# reads or pays for another's stored events.
events_servers() {
    [[ -n $NATS_PID ]] && stop_pid "$NATS_PID"
    [[ -n $REDIS_PID ]] && stop_pid "$REDIS_PID"
    rm -rf "$WORK/nats" "$WORK/redis"
    start_nats
    start_redis
}

# Instance B (the subscription, no HTTP) first: its consumer must exist before the first emit.
start_events_cohort() {
    local run=$1 port
    local log_a=$LOG_DIR/events-cohort-A-run$run.log log_b=$LOG_DIR/events-cohort-B-run$run.log
    local env=(COHORT_NATS_URL="nats://127.0.0.1:$NATS_PORT" COHORT_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
        "${SIGNING[@]}" COHORT_COMMAND_TIMEOUT=600s)
    spawn "$log_b" env "${env[@]}" COHORT_SERVICES=sink COHORT_HTTP_ADDR=off "$BIN_DIR/cohort-events"
    PIDS=("$SPAWNED_PID") LABELS=("B") LOGS=("$log_b")
    if ! wait_log "$SPAWNED_PID" "$log_b" 'cohort instance ready' "$READY_TIMEOUT_SECS" ||
        ! grep -q 'cohort instance ready' "$log_b"; then
        FAIL_REASON="cohort-events B did not get ready"
        return 1
    fi
    port=$(free_port)
    spawn "$log_a" env "${env[@]}" COHORT_SERVICES=emitter COHORT_HTTP_ADDR="127.0.0.1:$port" "$BIN_DIR/cohort-events"
    PIDS=("$SPAWNED_PID" "${PIDS[@]}") LABELS=("A" "${LABELS[@]}") LOGS=("$log_a" "${LOGS[@]}")
    EMIT_URL="http://127.0.0.1:$port" STATS_URL="http://127.0.0.1:$port"
    wait_http "$SPAWNED_PID" GET "$EMIT_URL/readyz" || { FAIL_REASON="cohort-events A did not answer GET /readyz"; return 1; }
}

# start_events_by_hand RUN NAME [BENCH_REDIS_URL=...] — the consumer first, then the publisher.
start_events_by_hand() {
    local run=$1 name=$2 port
    local log_a=$LOG_DIR/$name-A-run$run.log log_b=$LOG_DIR/$name-B-run$run.log
    shift 2
    port=$(free_port)
    STATS_URL="http://127.0.0.1:$port"
    spawn "$log_b" env BENCH_EVENTS_ROLE=consume BENCH_NATS_URL="nats://127.0.0.1:$NATS_PORT" \
        BENCH_ADDR="127.0.0.1:$port" "$@" "$BIN_DIR/events_baseline"
    PIDS=("$SPAWNED_PID") LABELS=("B") LOGS=("$log_b")
    wait_http "$SPAWNED_PID" GET "$STATS_URL/stats" || { FAIL_REASON="$name consumer did not answer"; return 1; }
    port=$(free_port)
    EMIT_URL="http://127.0.0.1:$port"
    spawn "$log_a" env BENCH_EVENTS_ROLE=publish BENCH_NATS_URL="nats://127.0.0.1:$NATS_PORT" \
        BENCH_ADDR="127.0.0.1:$port" "$BIN_DIR/events_baseline"
    PIDS=("$SPAWNED_PID" "${PIDS[@]}") LABELS=("A" "${LABELS[@]}") LOGS=("$log_a" "${LOGS[@]}")
    wait_http "$SPAWNED_PID" GET "$EMIT_URL/readyz" || { FAIL_REASON="$name publisher did not answer"; return 1; }
}

start_events() {
    case $1 in
    events-cohort) start_events_cohort "$2" ;;
    events-hand) start_events_by_hand "$2" events-hand BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" ;;
    events-bare) start_events_by_hand "$2" events-bare ;;
    esac
}

# json_number JSON FIELD — a number field of a flat JSON object, nothing if absent.
json_number() { grep -o "\"$2\":[0-9.eE+-]*" <<<"$1" | head -n 1 | cut -d: -f2; }

# events_emit SECONDS RATE — emits; sets EMITTED to how many events JetStream acknowledged.
EMITTED=""
events_emit() {
    local answer
    answer=$(curl -s --max-time $((${1%.*} + 120)) -H 'Content-Type: application/json' \
        --data-binary "{\"seconds\":$1,\"rate\":$2,\"concurrency\":$EVENTS_CONCURRENCY}" "$EMIT_URL/emit" || true)
    EMITTED=$(json_number "$answer" emitted)
    [[ -n $EMITTED ]] || { FAIL_REASON="POST /emit answered: ${answer:0:200}"; return 1; }
}

STATS=""
events_stats() {
    STATS=$(curl -s --max-time 10 "$STATS_URL/stats" || true)
    [[ -n $(json_number "$STATS" applied) ]] || { FAIL_REASON="GET /stats answered: ${STATS:0:200}"; return 1; }
}

# events_settle APPLIED — until the effect counter reaches APPLIED and stays there 300 ms, giving
# up after EVENTS_STALL_SECS without progress. Leaves the last stats in STATS.
events_settle() {
    local want=$1 applied last="" since
    since=$(now_us)
    while :; do
        events_stats || return 1
        applied=$(json_number "$STATS" applied)
        if ((applied >= want)) && [[ $applied == "$last" ]]; then return 0; fi
        [[ $applied != "$last" ]] && since=$(now_us)
        if (($(now_us) - since > EVENTS_STALL_SECS * 1000000)); then
            FAIL_REASON="the effect counter stalled at $applied, short of $want"
            return 1
        fi
        last=$applied
        sleep 0.3
    done
}

# events_phase SECONDS RATE — one measured phase; sets PHASE to "events/s p50_ms p99_ms emitted
# redelivered". Every event emitted must be applied exactly once (the effect counter), though a
# delivery may come twice (then "redelivered" counts it).
PHASE=""
events_phase() {
    local seconds=$1 rate=$2 applied0 processed applied first last
    curl -s -o /dev/null --max-time 10 -X DELETE "$STATS_URL/stats" || true
    events_stats || return 1
    applied0=$(json_number "$STATS" applied)
    events_emit "$seconds" "$rate" || return 1
    events_settle $((applied0 + EMITTED)) || return 1
    processed=$(json_number "$STATS" processed) applied=$(json_number "$STATS" applied)
    if ((applied - applied0 != EMITTED || processed < EMITTED)); then
        FAIL_REASON="emitted $EMITTED, applied $((applied - applied0)), handled $processed"
        return 1
    fi
    first=$(json_number "$STATS" first_sent_us) last=$(json_number "$STATS" last_done_us)
    PHASE=$(awk -v n="$EMITTED" -v f="$first" -v l="$last" -v p50="$(json_number "$STATS" p50_us)" \
        -v p99="$(json_number "$STATS" p99_us)" -v r="$((processed - EMITTED))" 'BEGIN {
        printf "%.1f %.3f %.3f %d %d\n", (l > f ? n * 1e6 / (l - f) : 0), p50 / 1000, p99 / 1000, n, r }')
}

# bench_events KEY RUN — one measured run of an events contender; appends "sat_rate sat_p50
# sat_p99 fixed_rate fixed_p50 fixed_p99 emitted_sat emitted_fixed redelivered run" to its
# results, and its CPU time per event at saturation to KEY.cpu.
bench_events() {
    local key=$1 run=$2 cpu_before sat
    PIDS=() LABELS=() LOGS=() FAIL_REASON=""
    log "[run $run/$RUNS] ${TITLE[$key]}: starting"
    events_servers
    if ! start_events "$key" "$run" || ! events_phase 0.5 20; then
        fail_contender "$key"
        stop_contender
        return 0
    fi
    log "${TITLE[$key]}: warm-up ${WARMUP_SECS}s, then ${DURATION}s at saturation and ${DURATION}s at $EVENTS_RATE events/s"
    if events_phase "$WARMUP_SECS" 0 && cpu_before=$(cpu_sample) && events_phase "$DURATION" 0; then
        sat=$PHASE
        cpu_per_count "$cpu_before" "$(cpu_sample)" "$EMITTED" >>"$RESULTS/$key.cpu"
    fi
    if [[ -n $FAIL_REASON ]] || ! events_phase "$DURATION" "$EVENTS_RATE"; then
        fail_contender "$key"
        stop_contender
        return 0
    fi
    stop_contender
    local rate p50 p99 emitted again f_rate f_p50 f_p99 f_emitted f_again
    read -r rate p50 p99 emitted again <<<"$sat"
    read -r f_rate f_p50 f_p99 f_emitted f_again <<<"$PHASE"
    echo "$rate $p50 $p99 $f_rate $f_p50 $f_p99 $emitted $f_emitted $((again + f_again)) $run" >>"$RESULTS/$key"
    log "${TITLE[$key]}: saturation $rate events/s, p50 $p50 ms, p99 $p99 ms; at $EVENTS_RATE/s ($f_rate made): p50 $f_p50 ms, p99 $f_p99 ms; $((emitted + f_emitted)) events, each applied once"
}

events_report() {
    local key hand
    hand=$(metric events-hand 1)
    echo
    echo "### Events: emit -> JetStream -> a subscription on another process, applied once"
    echo
    echo "$EVENTS_CONCURRENCY publishes in flight, 64 events handled at once; ${DURATION}s at saturation," \
        "then ${DURATION}s at $EVENTS_RATE events/s; runs: $RUNS (medians), $(nproc) cores," \
        "load avg at start $LOAD_AT_START, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "| contender | events/s at saturation | ratio | p50 / p99 at saturation | p50 / p99 at $EVENTS_RATE/s | events checked (all runs) |"
    echo "|---|---:|---:|---:|---:|---|"
    for key in "${EVENT_CONTENDERS[@]}"; do
        row_due "$key" 6 || continue
        echo "| ${TITLE[$key]} | $(num "$(metric "$key" 1)" 0) | $(num "$(div "$(metric "$key" 1)" "$hand")" 2) |" \
            "$(num "$(metric "$key" 2)" 2) / $(num "$(metric "$key" 3)" 2) ms |" \
            "$(num "$(metric "$key" 5)" 2) / $(num "$(metric "$key" 6)" 2) ms |" \
            "$(awk '{ n += $7 + $8; r += $9 } END { printf "%d, each applied once; %d delivered twice", n, r }' "$RESULTS/$key") |"
    done
    CPU_UNIT=event cpu_report "${EVENT_CONTENDERS[@]}"
    echo
    echo "Target:"
    echo
    check "cohort events/s / hand-written events/s" "$(div "$(metric events-cohort 1)" "$hand")" ">=" 0.80
    per_run_ratios events-cohort events-hand
}
