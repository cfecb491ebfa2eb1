# scripts/bench.d/orders.sh — the orders scenario of scripts/bench (sourced by it, not run):
# POST /orders on the Cohort cluster (orders-hot, orders-spread) and on its hand-written twin,
# bench/src/bin/orders_baseline.rs (orders-hot-baseline, orders-spread-baseline), each pair back
# to back; orders-hot once more with the example app's audit on (orders-audit); the books checked
# after every run on all.

# The Cohort cluster of the orders variants. It runs only the services an order needs (sign-in,
# stock and orders), as the twin does: the example app's audit subscriptions take three deliveries
# an order, each a unit of work, which the twin has no counterpart for. orders-audit runs them all.
start_orders_cluster() {
    if [[ $2 == orders-audit ]]; then start_cluster "$@"; else COHORT_SERVICES=orders,accounts start_cluster "$@"; fi
}

# The orders baseline: two processes on the NATS and Redis of the Cohort cluster, in its shape (A
# serves HTTP and sends each order as a NATS request, A and B both run orders).
start_orders_baseline() {
    local name=$2 port
    local log_a=$LOG_DIR/$name-A-run$1.log log_b=$LOG_DIR/$name-B-run$1.log
    local urls=(BENCH_NATS_URL="nats://127.0.0.1:$NATS_PORT" BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT")
    port=$(free_port)
    URL="http://127.0.0.1:$port"
    spawn "$log_b" env "${urls[@]}" BENCH_ADDR=off BENCH_INSTANCE=B "${PROFILER[@]}" "$BIN_DIR/orders_baseline"
    PIDS=("$SPAWNED_PID") LABELS=("B") LOGS=("$log_b")
    wait_log "$SPAWNED_PID" "$log_b" 'responder ready' 10 || { FAIL_REASON="orders baseline B exited"; return 1; }
    spawn "$log_a" env "${urls[@]}" BENCH_ADDR="127.0.0.1:$port" BENCH_INSTANCE=A "${PROFILER[@]}" "$BIN_DIR/orders_baseline"
    PIDS=("$SPAWNED_PID" "${PIDS[@]}") LABELS=("A" "${LABELS[@]}") LOGS=("$log_a" "${LOGS[@]}")
    wait_http "$SPAWNED_PID" GET "$URL/audit" || { FAIL_REASON="orders baseline A did not answer GET /audit"; return 1; }
}

# How long the stock may take to stand still once wrk stopped (the orders it cut off still commit).
ORDERS_SETTLE_SECS=10
ORDERS_BEFORE=""   # "stock_left marker_id" right before the measured load

# The admin of the orders benchmark: the example app gives it the admin role (SHOP_ADMINS), which
# setting the stock needs; it places the orders too, as placing one needs a signed-in user.
BENCH_ADMIN=bench-admin
export SHOP_ADMINS=$BENCH_ADMIN
SESSION_COOKIE=""  # "cohort_session=..." of the admin, once signed in

# Creates the admin's account (it may exist) and signs it in: sets SESSION_COOKIE.
sign_in_admin() {
    local credentials="{\"username\":\"$BENCH_ADMIN\",\"password\":\"bench-secret\"}"
    curl -s -o /dev/null --max-time 30 -H 'Content-Type: application/json' \
        --data-binary "$credentials" "$URL/accounts" || true
    SESSION_COOKIE=$(curl -s -D - -o /dev/null --max-time 30 -H 'Content-Type: application/json' \
        --data-binary "$credentials" "$URL/sessions" | grep -o 'cohort_session=[0-9a-f]*' | head -n 1 || true)
    [[ -n $SESSION_COOKIE ]] || { FAIL_REASON="POST /sessions did not sign $BENCH_ADMIN in"; return 1; }
}

# Signs the admin in and sets the stock of every SKU of the variant; then one order must be accepted.
ready_orders() {
    local n=${SKUS[$1]} codes code
    sign_in_admin || return 1
    codes=$(curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 -X PUT -H 'Content-Type: application/json' \
        -H "Cookie: $SESSION_COOKIE" --data-binary "{\"qty\":$ORDER_STOCK}" "$URL/stock/sku-[1-$n]" || true)
    if [[ $(grep -c '^200$' <<<"$codes") != "$n" ]]; then
        FAIL_REASON="PUT /stock/{sku} did not answer 200 for all $n SKUs: $(sort <<<"$codes" | uniq -c | xargs)"
        return 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H 'Content-Type: application/json' \
        -H "Cookie: $SESSION_COOKIE" --data-binary '{"sku":"sku-1","qty":1}' "$URL/orders" || true)
    [[ $code == 201 ]] || { FAIL_REASON="POST /orders answered $code, not 201"; return 1; }
}

# Once the warm-up's last orders are in: a marker order, then the stock left.
before_orders() {
    local left
    mark_orders "$1" && left=$STOCK_LEFT || return 1
    ORDERS_BEFORE="$left $MARKER_ID"
}

# parse_orders WRK_OUTPUT — "orders/s p50_ms p99_ms errors": wrk's requests per second times the
# share of them answered 201; errors are the other answers and the socket errors.
parse_orders() {
    local parsed rps p50 p99 created answered
    parsed=$(parse_wrk "$1") || return 1
    read -r rps p50 p99 _ <<<"$parsed"
    created=$(status_count "$1" 201) answered=$(status_count "$1")
    ((answered > 0)) || return 1
    echo "$(awk -v r="$rps" -v c="$created" -v a="$answered" 'BEGIN { printf "%.2f", r * c / a }') $p50 $p99" \
        "$((answered - created + $(socket_errors "$1")))"
}

# The stock taken must equal the orders committed between two marker orders (their ids are drawn
# from one sequence: the difference less one) and the 201s. wrk's stop cuts off the requests in
# flight, which the cluster may still commit: up to that many more are no mismatch. An id drawn
# for an order that was not committed (Cohort draws it before the unit) must have an answer
# other than 201 or be cut off. Sets EXTRA_COLUMNS to "cut_off committed_of_them".
verify_orders() {
    local key=$1 out=$2 stock0 id0 created answered sent cut_off taken ids
    read -r stock0 id0 <<<"$ORDERS_BEFORE"
    created=$(status_count "$out" 201) answered=$(status_count "$out")
    sent=$(awk '$1 == "orders:" && $2 == "sent" { print $3 }' "$out")
    cut_off=$((${sent:-0} - answered))
    mark_orders "$key" $((stock0 - created)) || return 1
    taken=$((stock0 - STOCK_LEFT - 1)) ids=$((MARKER_ID - id0 - 1))
    if ((taken < created || taken > created + cut_off || ids < taken || ids > taken + answered - created + cut_off)); then
        FAIL_REASON="stock taken $taken, order ids drawn $ids, 201 answers $created of $answered ($cut_off more cut off by wrk's stop)"
        return 1
    fi
    log "${TITLE[$key]}: stock taken = $taken orders, $ids ids drawn: $created answered 201, $((taken - created)) of the $cut_off cut off by wrk's stop"
    EXTRA_COLUMNS="$cut_off $((taken - created))"
}

# mark_orders KEY [MAX_LEFT] — once the stock of KEY's SKUs is at most MAX_LEFT and the same 200 ms
# later (for up to ORDERS_SETTLE_SECS), places a marker order on sku-1 and reads the stock it
# left. Sets MARKER_ID and STOCK_LEFT.
MARKER_ID="" STOCK_LEFT=""
mark_orders() {
    local key=$1 max_left=${2:-$((ORDER_STOCK * SKUS[$1]))} deadline=$(($(now_us) + ORDERS_SETTLE_SECS * 1000000)) left="" last=""
    while (($(now_us) < deadline)); do
        left=$(stock_left "$key")
        [[ -n $left && $left == "$last" && $left -le $max_left ]] && break
        last=$left
        sleep 0.2
    done
    if [[ -z $left || $left != "$last" || $left -gt $max_left ]]; then
        FAIL_REASON="GET /stock/{sku}: the stock left (${left:-no answer}) did not settle at or below $max_left within ${ORDERS_SETTLE_SECS}s"
        return 1
    fi
    MARKER_ID=$(curl -s --max-time 5 -H 'Content-Type: application/json' -H "Cookie: $SESSION_COOKIE" \
        --data-binary '{"sku":"sku-1","qty":1}' "$URL/orders" | grep -o '"id":[0-9]*' | cut -d: -f2 || true)
    [[ -n $MARKER_ID ]] || { FAIL_REASON="the marker order got no order id from POST /orders"; return 1; }
    STOCK_LEFT=$(stock_left "$key")
    [[ -n $STOCK_LEFT ]] || { FAIL_REASON="GET /stock/{sku} did not answer for every SKU"; return 1; }
}

# stock_left KEY — the stock left, summed over the variant's SKUs; nothing if one did not answer.
stock_left() {
    local n=${SKUS[$1]}
    curl -s --max-time 30 -w '\n' "$URL/stock/sku-[1-$n]" 2>/dev/null | grep -o '"qty":[0-9]*' |
        awk -F: -v n="$n" '{ s += $2; c++ } END { if (c == n) printf "%.0f\n", s }' || true
}

# status_count WRK_OUTPUT [STATUS] — the answers with STATUS (default: all) that orders.lua counted.
status_count() {
    awk -v s="${2:-}" '$1 == "orders:" && $2 == "status" && (s == "" || $3 == s) { n += $4 } END { print n + 0 }' "$1"
}

# non201_cell KEY — the answers other than 201 by status, and the socket errors, over KEY's runs.
non201_cell() {
    local run files=()
    for run in $(awk '{ print $10 }' "$RESULTS/$1"); do files+=("$LOG_DIR/wrk-$1-run$run.txt"); done
    awk '$1 == "orders:" && $2 == "status" && $3 != 201 { print $3, $4 }
        /Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) { sub(",", "", $i); s[$(i - 1)] += $i } }
        END { for (k in s) if (s[k] > 0) print "socket-" k, s[k] }' "${files[@]}" |
        sort | awk '{ n[$1] += $2; if (!($1 in seen)) { seen[$1]; order[++k] = $1 } }
            END { for (i = 1; i <= k; i++) out = out (i > 1 ? ", " : "") order[i] ": " n[order[i]]; print (k ? out : "none") }'
}

# The Cohort variants and their hand-written twins: "cohort baseline" pairs, the targets.
ORDER_TWINS=("orders-hot orders-hot-baseline" "orders-spread orders-spread-baseline")
# The twin of a variant that is no target: what its ratio is taken against.
declare -A ORDER_TWIN_OF=([orders-audit]=orders-hot-baseline)

orders_report() {
    local key pair cohort twin
    echo
    echo "### Orders: POST /orders, the Cohort cluster against the hand-written program"
    echo
    echo "{\"sku\": \"sku-<n>\", \"qty\": 1}, 201 expected, $(conditions)"
    echo
    echo "| variant | orders/s | ratio | p50 | p99 | other answers and socket errors (all runs) | peak RSS (MB, per process) |"
    echo "|---|---:|---:|---:|---:|---|---|"
    for key in "${ORDER_VARIANTS[@]}"; do
        row_due "$key" 7 || continue
        echo "| ${TITLE[$key]} | $(num "$(metric "$key" 1)" 0) | $(num "$(twin_ratio "$key")" 2) |" \
            "$(num "$(metric "$key" 2)" 2) ms | $(num "$(metric "$key" 3)" 2) ms | $(non201_cell "$key") | $(peak_cell "$key") |"
    done
    cpu_report "${ORDER_VARIANTS[@]}"
    echo
    echo "Targets:"
    echo
    for pair in "${ORDER_TWINS[@]}"; do
        read -r cohort twin <<<"$pair"
        any_selected "$cohort" "$twin" || continue
        check "${TITLE[$cohort]} / ${TITLE[$twin]} orders/s" "$(twin_ratio "$cohort")" ">=" 0.85
        per_run_ratios "$cohort" "$twin"
    done
    local measured=0
    for key in "${ORDER_VARIANTS[@]}"; do [[ -s $RESULTS/$key ]] && measured=1; done
    ((measured)) || return 0
    echo
    echo "Checked after every run: the stock taken (GET /stock/{sku} before and after) equals the"
    echo "orders committed (the ids of a marker order placed before and after) and the 201 answers, give"
    echo "or take the requests in flight when wrk stopped, which the servers may still commit:"
    echo
    for key in "${ORDER_VARIANTS[@]}"; do
        [[ -s $RESULTS/$key ]] || continue
        awk -v t="${TITLE[$key]}" '{ cut += $11; done += $12 }
            END { printf "- %s: %d cut off, %d of them committed (all runs)\n", t, cut, done }' "$RESULTS/$key"
    done
}

# twin_ratio KEY — the Cohort variant KEY's orders/s over its twin's ("-" for a twin or unmeasured).
twin_ratio() {
    [[ $1 == *-baseline ]] && { echo "-"; return; }
    div "$(metric "$1" 1)" "$(metric "${ORDER_TWIN_OF[$1]:-$1-baseline}" 1)"
}
