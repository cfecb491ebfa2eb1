# shellcheck shell=bash
# scripts/bench.d/soak.sh — the soak (BENCH_ONLY=soak), sourced by scripts/bench: BENCH_SOAK_SECS
# (default 600) of mixed load on three Cohort instances (example app, all serving HTTP, one NATS,
# one Redis, signed). On each instance at once: POST /echo; POST /orders over 100 SKUs, as the
# signed-in admin (each order emits OrderPlaced, which the audit's subscriptions count); and a
# session cycle: log in (its own user), GET /me, log out, a pause. The load runs in windows of a
# minute (a fifth of the time when it is shorter than 5 minutes), a fresh wrk per stream and
# instance each, which gives each window its own latencies; the first window is the warm-up.
# Passes when: each instance's RSS floor (the least of its samples in a window: a log-in's Argon2
# holds 19 MiB while it hashes, so any one sample swings by that) grows by at most 5% from the
# first window after the warm-up to the last, the
# p99 of each stream in the last window is at most 1.2 times the first after the warm-up, no
# answer is an error, and the counts add up (orders answered 201 = stock taken = orders the audit
# recorded; the events each subscription processed = the events emitted; sessions created = logins
# answered, and likewise the session reads and log-outs).

SOAK_SECS=${BENCH_SOAK_SECS:-600}
[[ $SOAK_SECS =~ ^[0-9]+$ && $SOAK_SECS -ge 10 ]] || die "BENCH_SOAK_SECS must be an integer of at least 10"
if ((SOAK_SECS >= 300)); then SOAK_WINDOW=60; else SOAK_WINDOW=$((SOAK_SECS / 5)); fi
SOAK_WINDOWS=$((SOAK_SECS / SOAK_WINDOW))
SKUS["soak"]=100
# Per instance: the three streams' wrk threads and connections, 21 connections in all, so that
# the three instances together carry about the echo scenario's 64.
SOAK_STREAMS=(echo orders sessions)
declare -A SOAK_WRK=([echo]="-t1 -c16" [orders]="-t1 -c4" [sessions]="-t1 -c1")
# A session cycle's pause: a log-in hashes a password (Argon2, tens of ms of CPU by design), a few
# a second per instance are a busy shop's, not a password-guessing attack.
SOAK_SESSION_PAUSE_MS=500
SOAK_PASSWORD=soak-secret
SOAK_RSS_EVERY_SECS=1
# How long the audit may take to count the events after the load: all the events queued.
SOAK_SETTLE_SECS=60
# The targets.
SOAK_RSS_GROWTH_MAX=0.05
SOAK_P99_GROWTH_MAX=1.2

SOAK_IDS=()      # each instance's id (its x-cohort-instance header), in FRONT_LABELS' order
SOAK_BEFORE=""   # the audit, metrics and stock when the measured load starts (soak_books)

# The load of one stream: each connection logs in as USER (password PASSWORD), reads its session
# (GET /me), logs out and pauses PAUSE_MS. One connection a thread: the steps follow the answers.
write_sessions_lua() {
    cat >"$WORK/sessions.lua" <<'EOF'
local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("id", #threads)
end

-- wrk -s sessions.lua URL -- USER PASSWORD PAUSE_MS
function init(args)
    login = wrk.format("POST", "/sessions", { ["Content-Type"] = "application/json" },
        string.format('{"username":"%s","password":"%s"}', args[1], args[2]))
    pause = tonumber(args[3])
    step, cookie = "login", nil
    sent, answered = { login = 0, me = 0, logout = 0 }, {}
    -- wrk calls the first thread's request() once before the run, to check it: not sent.
    checked = id ~= 1
end

function request()
    if checked then sent[step] = sent[step] + 1 else checked = true end
    if step == "login" then return login end
    if step == "me" then return wrk.format("GET", "/me", { ["Cookie"] = cookie }) end
    return wrk.format("DELETE", "/sessions", { ["Cookie"] = cookie })
end

function response(status, headers)
    local key = step .. " " .. status
    answered[key] = (answered[key] or 0) + 1
    if step == "login" then
        local set = headers["set-cookie"] or headers["Set-Cookie"] or ""
        cookie = set:match("cohort_session=%x+")
        if status == 200 and cookie then step = "me" end
    elseif step == "me" then
        step = "logout"
    else
        step = "login"
    end
end

function delay()
    return step == "login" and pause or 0
end

function done()
    local sent, answered = {}, {}
    for _, thread in ipairs(threads) do
        for k, n in pairs(thread:get("sent")) do sent[k] = (sent[k] or 0) + n end
        for k, n in pairs(thread:get("answered")) do answered[k] = (answered[k] or 0) + n end
    end
    for k, n in pairs(sent) do io.write(string.format("sessions: sent %s %d\n", k, n)) end
    for k, n in pairs(answered) do io.write(string.format("sessions: answered %s %d\n", k, n)) end
end
EOF
}

# soak — starts the instances, runs the windows, checks the books; the report reads what it left
# in $RESULTS/soak.* (soak.failed: why it failed).
soak() {
    local w
    URL="" PIDS=() LABELS=() FAIL_REASON=""
    log "${TITLE[soak]}: ${SOAK_SECS}s of mixed load, windows of ${SOAK_WINDOW}s, the first the warm-up"
    write_sessions_lua
    if ! start_fronts-cluster 1 soak || ! soak_ready || ! soak_quiet; then
        fail_contender soak
        stop_contender
        return 0
    fi
    spawn "$LOG_DIR/soak-rss.txt" sample_rss "${PIDS[@]}" "$NATS_PID" "$REDIS_PID"
    local sampler=$SPAWNED_PID
    for ((w = 1; w <= SOAK_WINDOWS; w++)); do
        soak_window "$w"
        soak_alive || break
    done
    stop_pid "$sampler"
    [[ -n $FAIL_REASON ]] || soak_verify || true
    stop_contender
    [[ -z $FAIL_REASON ]] || fail_contender soak
}

# Signs the admin in and stocks the SKUs (as the orders scenario does), creates each instance's
# session user, and learns each instance's id.
soak_ready() {
    local i code
    URL=${FRONT_URLS[0]}
    ready_orders soak || return 1
    for i in "${!FRONT_URLS[@]}"; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -H 'Content-Type: application/json' \
            --data-binary "$(soak_credentials "$i")" "${FRONT_URLS[$i]}/accounts" || true)
        [[ $code == 201 ]] || { FAIL_REASON="POST /accounts for $(soak_user "$i") answered $code, not 201"; return 1; }
        SOAK_IDS[i]=$(curl -s -D - -o /dev/null --max-time 5 -H 'Content-Type: application/json' \
            --data-binary "$BODY" "${FRONT_URLS[$i]}/echo" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cohort-instance" { print $2 }')
        [[ -n ${SOAK_IDS[i]} ]] || { FAIL_REASON="POST /echo on ${FRONT_URLS[$i]} gave no x-cohort-instance"; return 1; }
    done
}

# soak_quiet — sets SOAK_BEFORE once the books stand still for a second: the orders of the
# readiness check, and any before, are counted.
soak_quiet() {
    local deadline=$(($(now_us) + ORDERS_SETTLE_SECS * 1000000)) books
    SOAK_BEFORE=""
    while (($(now_us) < deadline)); do
        books=$(soak_books) || { FAIL_REASON="GET /audit or GET /stock/{sku} did not answer"; return 1; }
        [[ $books == "$SOAK_BEFORE" ]] && return 0
        SOAK_BEFORE=$books
        sleep 1
    done
    FAIL_REASON="the audit did not settle before the load: $SOAK_BEFORE"
    return 1
}

soak_user() { echo "soak-${FRONT_LABELS[$1]}"; }
soak_credentials() { echo "{\"username\":\"$(soak_user "$1")\",\"password\":\"$SOAK_PASSWORD\"}"; }

# soak_window W — every stream on every instance for SOAK_WINDOW seconds, at once; then one line
# of $RESULTS/soak.windows: "W echo_rps echo_p99 orders_rps orders_p99 sessions_rps sessions_p99
# errors", then the RSS floor and peak (kB) of instances A, B, C, nats-server and redis-server
# (rates summed over the instances, p99s the worst instance's, in ms).
soak_window() {
    local w=$1 i stream pids=() out target line pid t0
    t0=$(now_us)
    for i in "${!FRONT_URLS[@]}"; do
        for stream in "${SOAK_STREAMS[@]}"; do
            out=$(soak_out "$w" "$stream" "$i")
            case $stream in
                echo) target=(-s "$WORK/echo.lua" "${FRONT_URLS[$i]}/echo") ;;
                orders) target=(-s "$WORK/orders.lua" "${FRONT_URLS[$i]}/orders" -- "${SKUS[soak]}" "$SESSION_COOKIE") ;;
                sessions) target=(-s "$WORK/sessions.lua" "${FRONT_URLS[$i]}" -- "$(soak_user "$i")" "$SOAK_PASSWORD" "$SOAK_SESSION_PAUSE_MS") ;;
            esac
            # shellcheck disable=SC2086 # SOAK_WRK holds several arguments
            spawn "$out" wrk ${SOAK_WRK[$stream]} -d"${SOAK_WINDOW}s" --latency "${target[@]}"
            pids+=("$SPAWNED_PID")
        done
    done
    for pid in "${pids[@]}"; do wait "$pid" || true; stop_pid "$pid"; done
    line=$w
    for stream in "${SOAK_STREAMS[@]}"; do line+=" $(soak_stream_figures "$w" "$stream")"; done
    line+=" $(soak_errors "$w") $(rss_span "$t0" "$(now_us)")"
    echo "$line" >>"$RESULTS/soak.windows"
    log "soak window $w/$SOAK_WINDOWS: $line"
}

soak_out() { echo "$LOG_DIR/wrk-soak-w$1-$2-${FRONT_LABELS[$3]}.txt"; }

# soak_outs W STREAM — the window's wrk outputs of STREAM, or of every stream.
soak_outs() {
    local i stream
    for i in "${!FRONT_URLS[@]}"; do
        for stream in "${SOAK_STREAMS[@]}"; do
            [[ -z ${2:-} || $2 == "$stream" ]] && soak_out "$1" "$stream" "$i"
        done
    done
    return 0
}

# soak_stream_figures W STREAM — "rps p99_ms" of a stream in a window: the rate summed over the
# instances, the worst instance's p99; "- -" if a wrk has no figures.
soak_stream_figures() {
    local f v rps=0 p99=0
    for f in $(soak_outs "$1" "$2"); do
        v=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
        [[ -n $v ]] || { echo "- -"; return; }
        rps=$(awk -v a="$rps" -v b="$v" 'BEGIN { printf "%.2f", a + b }')
        v=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
        p99=$(awk -v a="$p99" -v b="$v" 'BEGIN { print (b > a) ? b : a }')
    done
    echo "$rps $p99"
}

# soak_errors W — a window's answers that are not 2xx and socket errors, over all its wrk.
soak_errors() {
    local f n=0
    for f in $(soak_outs "$1"); do
        n=$((n + $(awk '/Non-2xx or 3xx responses:/ { n = $NF } END { print n + 0 }' "$f") + $(socket_errors "$f")))
    done
    echo "$n"
}

# Every instance must live through the soak.
soak_alive() {
    local i
    for i in "${!PIDS[@]}"; do
        alive "${PIDS[$i]}" || { FAIL_REASON="instance ${LABELS[$i]} died under load"; return 1; }
    done
}

# sample_rss PID... — every SOAK_RSS_EVERY_SECS, "time_us rss_kb..." of the processes ("-": gone).
sample_rss() {
    local line pid
    while :; do
        line=$(now_us)
        for pid in "$@"; do line+=" $(proc_kb "$pid" VmRSS | grep . || echo -)"; done
        echo "$line"
        sleep "$SOAK_RSS_EVERY_SECS"
    done
}

# rss_span FROM_US TO_US — the least and the largest RSS sampled in that time, of each process:
# "min... max..." ("-" if none).
rss_span() {
    awk -v from="$1" -v to="$2" '$1 >= from && $1 <= to {
            for (i = 2; i <= NF; i++) if ($i != "-") {
                if (!(i in lo) || $i < lo[i]) lo[i] = $i
                if (!(i in hi) || $i > hi[i]) hi[i] = $i
            }
            n = NF
        }
        END {
            for (i = 2; i <= n; i++) printf "%s ", (i in lo) ? lo[i] : "-"
            for (i = 2; i <= n; i++) printf "%s%s", (i in hi) ? hi[i] : "-", (i < n) ? " " : "\n"
        }' "$LOG_DIR/soak-rss.txt"
}

# soak_books — "stock recorded seen heard_A heard_B heard_C log_in me log_out": the stock left,
# the audit (orders recorded, events the counting subscription processed, events each instance's
# every-instance subscription processed) and the session commands each instance ran (summed).
soak_books() {
    local audit left id command line
    audit=$(curl -s --max-time 5 "$URL/audit")
    left=$(stock_left soak)
    [[ -n $left && -n $audit ]] || return 1
    line="$left $(jq -r '"\(.orders_recorded) \(.orders_seen)"' <<<"$audit")"
    for id in "${SOAK_IDS[@]}"; do line+=" $(jq -r --arg id "$id" '.heard_by_instance[$id] // 0' <<<"$audit")"; done
    for command in log_in me log_out; do line+=" $(commands_run "accounts.v1.$command")"; done
    echo "$line"
}

# commands_run COMMAND — how many times the instances ran COMMAND successfully (their metrics).
commands_run() {
    local url
    for url in "${FRONT_URLS[@]}"; do curl -s --max-time 5 "$url/metrics"; done |
        awk -v c="command=\"$1\"" 'index($0, "cohort_command_server_duration_seconds_count{") == 1 &&
            index($0, c) && index($0, "outcome=\"ok\"") { n += $NF } END { print n + 0 }'
}

# soak_verify — once the last events are counted, the books must agree with the answers. Writes
# $RESULTS/soak.counts; sets FAIL_REASON on a mismatch.
soak_verify() {
    local deadline=$(($(now_us) + SOAK_SETTLE_SECS * 1000000)) after before books last=""
    read -ra before <<<"$SOAK_BEFORE"
    local created cut_off
    created=$(soak_sum orders 'orders: status 201') cut_off=$(($(soak_sum orders 'orders: sent') - $(soak_sum orders 'orders: status')))
    # Settled: every event of the orders recorded has been counted, and the books stand still.
    while :; do
        books=$(soak_books) || { FAIL_REASON="GET /audit or GET /stock/{sku} did not answer after the load"; return 1; }
        read -ra after <<<"$books"
        soak_settled "${before[*]}" "${after[*]}" && [[ $books == "$last" ]] && break
        last=$books
        (($(now_us) < deadline)) || break
        sleep 1
    done
    local taken=$((before[0] - after[0])) recorded=$((after[1] - before[1])) seen=$((after[2] - before[2]))
    {
        echo "orders: $created answered 201, $cut_off more cut off by wrk's stops; stock taken $taken, orders recorded $recorded"
        echo "events: $recorded emitted; counted once (audit.count_order) $seen; heard by each instance (audit.hear_order) $((after[3] - before[3])), $((after[4] - before[4])), $((after[5] - before[5]))"
        soak_sessions_line "${before[*]}" "${after[*]}"
    } >"$RESULTS/soak.counts"
    cat "$RESULTS/soak.counts" >&2
    if ((taken != recorded || taken < created || taken > created + cut_off)); then
        FAIL_REASON="stock taken $taken, orders recorded $recorded, 201 answers $created ($cut_off more cut off)"
    elif ! soak_settled "${before[*]}" "${after[*]}"; then
        FAIL_REASON="the events processed do not add up to the $recorded emitted within ${SOAK_SETTLE_SECS}s"
    elif ! soak_sessions_add_up "${before[*]}" "${after[*]}"; then
        FAIL_REASON="the session commands run do not add up to the answers"
    fi
    [[ -z $FAIL_REASON ]]
}

# soak_settled BEFORE AFTER — whether every emitted event was counted once and heard everywhere.
soak_settled() {
    local b a i
    read -ra b <<<"$1"
    read -ra a <<<"$2"
    ((a[2] - b[2] == a[1] - b[1])) || return 1
    for i in 3 4 5; do ((a[i] - b[i] == a[1] - b[1])) || return 1; done
}

# soak_sum STREAM PREFIX — the sum of the last field of the lines starting with PREFIX in all the
# soak's wrk outputs of STREAM.
soak_sum() {
    local w files=()
    for ((w = 1; w <= SOAK_WINDOWS; w++)); do mapfile -t -O "${#files[@]}" files < <(soak_outs "$w" "$1"); done
    awk -v p="$2" 'index($0, p) == 1 { n += $NF } END { print n + 0 }' "${files[@]}"
}

# The session steps: logins answered 200, session reads (GET /me) answered 200, log-outs answered
# 204, against the commands the instances ran (before + answered <= ran <= before + sent).
SESSION_STEPS=(login me logout)
declare -A SESSION_OK=([login]=200 [me]=200 [logout]=204)

soak_sessions_line() {
    local b a i step out="sessions:"
    read -ra b <<<"$1"
    read -ra a <<<"$2"
    for i in 0 1 2; do
        step=${SESSION_STEPS[$i]}
        out+=" $step answered ${SESSION_OK[$step]} $(soak_sum sessions "sessions: answered $step ${SESSION_OK[$step]}")"
        out+=" of $(soak_sum sessions "sessions: sent $step") sent, run $((a[6 + i] - b[6 + i]));"
    done
    echo "${out%;}"
}

soak_sessions_add_up() {
    local b a i step ok sent ran
    read -ra b <<<"$1"
    read -ra a <<<"$2"
    for i in 0 1 2; do
        step=${SESSION_STEPS[$i]}
        ok=$(soak_sum sessions "sessions: answered $step ${SESSION_OK[$step]}")
        sent=$(soak_sum sessions "sessions: sent $step")
        ran=$((a[6 + i] - b[6 + i]))
        ((ok > 0 && ran >= ok && ran <= sent)) || return 1
    done
}

# ---------------------------------------------------------------- report

soak_report() {
    local file=$RESULTS/soak.windows
    echo
    echo "### Soak: ${SOAK_SECS}s of mixed load on three Cohort instances"
    echo
    echo "Each instance serves HTTP; on each at once: POST /echo (wrk ${SOAK_WRK[echo]}), POST /orders" \
        "over ${SKUS[soak]} SKUs (${SOAK_WRK[orders]}), a session cycle (${SOAK_WRK[sessions]}: log in," \
        "GET /me, log out, ${SOAK_SESSION_PAUSE_MS} ms pause); windows of ${SOAK_WINDOW}s, the first the" \
        "warm-up; rates summed over the instances, p99 the worst instance's; $(nproc) cores, load avg at" \
        "start $LOAD_AT_START, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    if [[ -s $RESULTS/soak.failed ]]; then
        echo "FAILED: $(paste -sd';' "$RESULTS/soak.failed")"
        echo
    fi
    [[ -s $file ]] || return 0
    echo "| window | echo req/s | echo p99 | orders req/s | orders p99 | sessions req/s | sessions p99 | errors | RSS floor A / B / C (MB) | RSS peak A / B / C |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    awk '{ printf "| %d | %.0f | %.2f ms | %.0f | %.2f ms | %.0f | %.2f ms | %d | %.1f / %.1f / %.1f | %.1f / %.1f / %.1f |\n",
        $1, $2, $3, $4, $5, $6, $7, $8, $9 / 1024, $10 / 1024, $11 / 1024, $14 / 1024, $15 / 1024, $16 / 1024 }' "$file"
    echo
    awk 'NR == 2 { n0 = $12; r0 = $13 } END { printf "RSS floor of nats-server %.1f → %.1f MB, of redis-server %.1f → %.1f MB (window 2 to the last; no target: they keep the events and the orders)\n",
        n0 / 1024, $12 / 1024, r0 / 1024, $13 / 1024 }' "$file"
    echo
    [[ -s $RESULTS/soak.counts ]] && sed 's/^/- /' "$RESULTS/soak.counts" && echo
    echo "Targets:"
    echo
    soak_checks "$file"
    echo
    if soak_passed; then echo "Soak: PASSED"; else echo "**Soak: FAILED**"; fi
}

# Whether the soak ran to the end with its books right and met every target.
soak_passed() {
    local checks
    [[ -s $RESULTS/soak.windows && ! -s $RESULTS/soak.failed ]] || return 1
    checks=$(soak_checks "$RESULTS/soak.windows")
    ! grep -qE 'MISS|n/a' <<<"$checks"
}

# soak_checks WINDOWS_FILE — the targets: errors, p99 and RSS growth (the first window is the
# warm-up: the p99s and RSS floors compared are of the next window and the last).
soak_checks() {
    local file=$1 last col label i stream
    last=$(awk 'END { print NR }' "$file")
    check "soak: errors (non-2xx answers and socket errors, all windows)" "$(awk '{ n += $8 } END { print n + 0 }' "$file")" "<=" 0
    if ((last < 3)); then
        echo "- soak: the p99 and RSS growth need 3 windows, the run has $last"
        return 0
    fi
    for i in "${!SOAK_STREAMS[@]}"; do
        stream=${SOAK_STREAMS[$i]} col=$((3 + 2 * i))
        check "soak: $stream p99, last window / window 2" "$(soak_ratio "$file" "$col" 2 "$last")" "<=" "$SOAK_P99_GROWTH_MAX"
    done
    for i in "${!FRONT_LABELS[@]}"; do
        label=${FRONT_LABELS[$i]} col=$((9 + i))
        check "soak: RSS floor growth of $label, last window / window 2 - 1" \
            "$(awk -v r="$(soak_ratio "$file" "$col" 2 "$last")" 'BEGIN { if (r == "-") print "-"; else printf "%.3f", r - 1 }')" "<=" "$SOAK_RSS_GROWTH_MAX"
    done
}

# soak_ratio FILE COLUMN FROM TO — the column's value in window TO over window FROM.
soak_ratio() {
    div "$(awk -v c="$2" -v w="$4" '$1 == w { print $c }' "$1")" "$(awk -v c="$2" -v w="$3" '$1 == w { print $c }' "$1")"
}
