#!/usr/bin/env bash
# Load test: avatar-proxy's memory-tier hits against nginx serving static bytes, side by side in
# one run, plus the proxy's RSS under that load and a cold stampede against a slow upstream.
#
# Usage: bash benches/load.sh            (from anywhere; builds the release binary first)
# Knobs: DURATION=10s CONNECTIONS=64 STAMPEDE=200 UPSTREAM_DELAY_MS=200 MEMORY_MB=64 PIN=1
#        CARGO_TARGET_DIR is honoured (release artifacts are looked up there).
#
# Fairness: with PIN=1 (the default, on 2+ cores) each server is pinned to the same single core
# (the last one) and wrk to another (core 0), so nginx (worker_processes 1) and avatar-proxy
# (tokio sizes its runtime from the affinity mask: 1 worker) get exactly one core each, and the
# load generator never competes with the server it measures. Both keep connections alive for
# the whole run (nginx keepalive_requests raised; hyper has no such limit).
#
# Everything runs on 127.0.0.1; every process started here is stopped on exit; each load phase
# is bounded by DURATION, every wait by a timeout.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
STAMPEDE=${STAMPEDE:-200}
UPSTREAM_DELAY_MS=${UPSTREAM_DELAY_MS:-200}
MEMORY_MB=${MEMORY_MB:-64}
PIN=${PIN:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
API_KEY=load-test-key

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------
# nginx and wrk are Debian packages; install them when missing (CI and fresh machines).
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    log "installing nginx and wrk"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
fi
for tool in cargo curl python3 nginx wrk; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# --- build -----------------------------------------------------------------------------------
log "building the release binary and the helper examples"
(cd "$ROOT" && cargo build --release --quiet --bin avatar-proxy \
    --example make_fixture --example stampede)
PROXY_BIN=$TARGET/release/avatar-proxy
MAKE_FIXTURE=$TARGET/release/examples/make_fixture
STAMPEDE_BIN=$TARGET/release/examples/stampede

# --- workspace and cleanup -------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/avatar-load.XXXXXX")
# nginx workers drop privileges when started as root: they must be able to read the files.
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Free loopback ports, asked of the kernel all at once so they differ.
read -r NGINX_PORT PROXY_PORT SLOW_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# Cores: servers on the last core, wrk on core 0 (see "Fairness" above). Command prefixes, not
# shell functions: a backgrounded function runs in a subshell, so `$!` would be the subshell's
# PID, not the server's (taskset execs, keeping the PID we record, kill and read RSS from).
CPUS=$(nproc)
if [[ $PIN == 1 && $CPUS -ge 2 ]] && command -v taskset >/dev/null; then
    SERVER_CPU=$((CPUS - 1))
    ON_SERVER_CORE=(taskset -c "$SERVER_CPU")
    ON_CLIENT_CORE=(taskset -c 0)
    PINNING="servers on core $SERVER_CPU, wrk on core 0"
else
    ON_SERVER_CORE=()
    ON_CLIENT_CORE=()
    PINNING="none (PIN=0 or a single core)"
fi

wait_for() { # URL: up to 10 s
    local i
    for i in $(seq 1 100); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "nothing answered at $1"
}

json_field() { # FIELD < JSON
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# --- the image -------------------------------------------------------------------------------
mkdir -p "$WORK/www" "$WORK/nginx"
chmod 755 "$WORK/www"
"$MAKE_FIXTURE" "$WORK/www/a.jpg" >/dev/null
FIXTURE_BYTES=$(stat -c %s "$WORK/www/a.jpg")
log "fixture: $FIXTURE_BYTES bytes"

# --- nginx: the reference, and the proxy's upstream ------------------------------------------
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_timeout 65s;
    keepalive_requests 10000000;
    types { image/jpeg jpg; }
    default_type application/octet-stream;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
    }
}
EOF
"${ON_SERVER_CORE[@]}" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>"$WORK/nginx/stderr.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_for "http://127.0.0.1:$NGINX_PORT/a.jpg"

# --- a slow upstream for the stampede: sleeps, then answers; counts what it was asked --------
cat >"$WORK/slow_upstream.py" <<'EOF'
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, delay_ms, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = open(path, "rb").read()
count, lock = 0, threading.Lock()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        if self.path == "/count":
            reply = str(count).encode()
        else:
            with lock:
                count += 1
            time.sleep(delay_ms / 1000)
            reply = body
        self.send_response(200)
        self.send_header("Content-Type", "text/plain" if self.path == "/count" else "image/jpeg")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
EOF
python3 "$WORK/slow_upstream.py" "$SLOW_PORT" "$UPSTREAM_DELAY_MS" "$WORK/www/a.jpg" &
PIDS+=($!)
wait_for "http://127.0.0.1:$SLOW_PORT/count"

# --- avatar-proxy: the embedded default (SQLite + local cache dir) ----------------------------
export AVATAR_LISTEN=127.0.0.1:$PROXY_PORT
export AVATAR_CACHE_DIR=$WORK/cache
export AVATAR_API_KEYS=$API_KEY
export AVATAR_MEMORY_CACHE_MB=$MEMORY_MB
export AVATAR_UPSTREAM_STATIC_HOSTS=127.0.0.1:$NGINX_PORT
export AVATAR_UPSTREAM_STATIC_BEARER=load-test-upstream-token
export AVATAR_UPSTREAM_STATIC_ALLOW_HTTP=true
export AVATAR_UPSTREAM_STATIC_ALLOW_PRIVATE=true
export AVATAR_UPSTREAM_SLOW_HOSTS=127.0.0.1:$SLOW_PORT
export AVATAR_UPSTREAM_SLOW_BEARER=load-test-upstream-token
export AVATAR_UPSTREAM_SLOW_ALLOW_HTTP=true
export AVATAR_UPSTREAM_SLOW_ALLOW_PRIVATE=true
"${ON_SERVER_CORE[@]}" "$PROXY_BIN" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_for "http://127.0.0.1:$PROXY_PORT/healthz"
PROXY="http://127.0.0.1:$PROXY_PORT"

register() { # USER_ID AVATAR_URL -> prints the public key
    curl -sf -X PUT "$PROXY/v1/identities/$1" \
        -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
        -d "{\"avatar_url\": \"$2\", \"display_name\": \"Load Test\"}" | json_field key
}

x_cache() { # URL -> the x-cache header of a GET
    curl -sf -o /dev/null -D - "$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache" {print $2}'
}

KEY=$(register load-user "http://127.0.0.1:$NGINX_PORT/a.jpg")
AVATAR="$PROXY/avatar/$KEY"
first=$(x_cache "$AVATAR")
second=$(x_cache "$AVATAR")
[[ $first == miss && $second == hit-memory ]] ||
    die "warm-up went wrong: x-cache $first then $second (want miss, hit-memory)"
# The reference serves exactly the bytes the proxy serves (its 128 px rendition), so the ratio
# compares serving cost, not body sizes. The 38 KB original is measured too, for scale.
curl -sf -o "$WORK/www/variant.jpg" "$AVATAR"
chmod 644 "$WORK/www/"*.jpg
VARIANT_BYTES=$(stat -c %s "$WORK/www/variant.jpg")

# --- wrk -------------------------------------------------------------------------------------
# wrk's own summary rounds; a done() hook prints exact figures (latencies are in µs).
cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d bytes_per_response=%.0f errors=%d non_2xx=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.bytes / math.max(summary.requests, 1),
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF

field() { # NAME < RESULT line
    tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'
}

run_wrk() { # URL DURATION -> the RESULT line
    "${ON_CLIENT_CORE[@]}" wrk -t1 -c"$CONNECTIONS" -d"$2" -s "$WORK/report.lua" "$1" | grep '^RESULT'
}

# CPU time the servers burn per request: utime + stime from /proc/PID/stat, summed over the
# given processes (all threads included). Unlike req/s, this barely moves when something else
# competes for the cores (a compile next door), so it is the steadier comparison.
TICKS_PER_SECOND=$(getconf CLK_TCK)
cpu_ticks() { # PID... -> clock ticks used so far
    local pid total=0 f
    for pid in "$@"; do
        # Drop "pid (comm) " so field 14 (utime) is index 11 and field 15 (stime) index 12.
        read -ra f < <(sed 's/^.*) //' "/proc/$pid/stat")
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
with_cpu() { # TICKS_BEFORE PID... < RESULT line -> the line plus cpu_us_per_request=
    local before=$1 result used
    shift
    result=$(cat)
    used=$(($(cpu_ticks "$@") - before))
    echo "$result cpu_us_per_request=$(python3 -c 'import sys; t, hz, n = map(float, sys.argv[1:]); print(f"{t * 1e6 / hz / max(n, 1):.1f}")' \
        "$used" "$TICKS_PER_SECOND" "$(field requests <<<"$result")")"
}

memory_hits() {
    curl -sf "$PROXY/metrics" |
        awk '/^avatar_cache_hits_total/ && /tier="memory"/ {print $NF}' | head -n1
}

# nginx's CPU is its master plus its worker(s).
read -ra NGINX_PROCS < <(echo "$NGINX_PID" $(pgrep -P "$NGINX_PID"))

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "warming both servers (2 s each)"
run_wrk "http://127.0.0.1:$NGINX_PORT/variant.jpg" 2s >/dev/null
run_wrk "$AVATAR" 2s >/dev/null

log "nginx, 38 KB original, $DURATION"
t0=$(cpu_ticks "${NGINX_PROCS[@]}")
NGINX_ORIG=$(run_wrk "http://127.0.0.1:$NGINX_PORT/a.jpg" "$DURATION" | with_cpu "$t0" "${NGINX_PROCS[@]}")
log "nginx, the proxy's rendition ($VARIANT_BYTES B), $DURATION"
t0=$(cpu_ticks "${NGINX_PROCS[@]}")
NGINX_SAME=$(run_wrk "http://127.0.0.1:$NGINX_PORT/variant.jpg" "$DURATION" | with_cpu "$t0" "${NGINX_PROCS[@]}")

log "avatar-proxy, memory-tier hits, $DURATION (sampling RSS)"
rss_kb() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$PROXY_PID/status"; }
RSS_IDLE=$(rss_kb VmRSS)
HITS_BEFORE=$(memory_hits)
t0=$(cpu_ticks "$PROXY_PID")
# wrk itself in the background (not through run_wrk, whose subshell would hide wrk's PID).
"${ON_CLIENT_CORE[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/report.lua" "$AVATAR" \
    >"$WORK/proxy_wrk.out" &
WRK_PID=$!
PIDS+=("$WRK_PID")
RSS_MAX=0
# Sample every 200 ms while wrk runs (bounded by wrk's own duration).
while kill -0 "$WRK_PID" 2>/dev/null; do
    rss=$(rss_kb VmRSS)
    if ((rss > RSS_MAX)); then RSS_MAX=$rss; fi
    sleep 0.2
done
wait "$WRK_PID"
PROXY_RES=$(grep '^RESULT' "$WORK/proxy_wrk.out" | with_cpu "$t0" "$PROXY_PID")
RSS_HWM=$(rss_kb VmHWM)
HITS=$(($(memory_hits) - HITS_BEFORE))

# --- cold stampede ---------------------------------------------------------------------------
log "cold stampede: $STAMPEDE concurrent GETs of one uncached key, upstream delay ${UPSTREAM_DELAY_MS} ms"
SLOW_KEY=$(register stampede-user "http://127.0.0.1:$SLOW_PORT/slow/a.jpg")
[[ $(curl -sf "http://127.0.0.1:$SLOW_PORT/count") == 0 ]] || die "the slow upstream was asked too early"
STAMPEDE_RES=$("${ON_CLIENT_CORE[@]}" "$STAMPEDE_BIN" "$PROXY/avatar/$SLOW_KEY" "$STAMPEDE")
UPSTREAM_REQUESTS=$(curl -sf "http://127.0.0.1:$SLOW_PORT/count")

# --- summary ---------------------------------------------------------------------------------
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
row() { # LABEL RESULT
    printf '%-44s %9s %8s %8s %8s %9s %7s %6s\n' "$1" \
        "$(field rps <<<"$2")" "$(field p50_ms <<<"$2")" "$(field p99_ms <<<"$2")" \
        "$(field max_ms <<<"$2")" "$(field cpu_us_per_request <<<"$2")" \
        "$(field bytes_per_response <<<"$2")" \
        "$(($(field errors <<<"$2") + $(field non_2xx <<<"$2")))"
}
P_RPS=$(field rps <<<"$PROXY_RES")
S_MAX=$(field max_ms <<<"$STAMPEDE_RES")

echo
echo "avatar-proxy load test: wrk -t1 -c$CONNECTIONS -d$DURATION, loopback; pinning: $PINNING"
echo "load average before the run: $LOAD_BEFORE (anything else busy on these cores skews every figure)"
printf '%-44s %9s %8s %8s %8s %9s %7s %6s\n' "" "req/s" "p50 ms" "p99 ms" "max ms" "CPU us/req" "B/resp" "errors"
row "nginx static, 38 KB original ($FIXTURE_BYTES B)" "$NGINX_ORIG"
row "nginx static, proxy's bytes ($VARIANT_BYTES B)" "$NGINX_SAME"
row "avatar-proxy memory hit (?s=128 default)" "$PROXY_RES"
echo
echo "ratio proxy / nginx, req/s (same bytes):        $(ratio "$P_RPS" "$(field rps <<<"$NGINX_SAME")")"
echo "ratio proxy / nginx, req/s (38 KB file):         $(ratio "$P_RPS" "$(field rps <<<"$NGINX_ORIG")")"
echo "ratio nginx / proxy, CPU per request (same bytes): $(ratio "$(field cpu_us_per_request <<<"$NGINX_SAME")" "$(field cpu_us_per_request <<<"$PROXY_RES")") (1.00 = as cheap as nginx)"
echo "memory-tier hits counted by /metrics during the run: $HITS (wrk: $(field requests <<<"$PROXY_RES") requests)"
echo "avatar-proxy RSS: idle after warm-up $((RSS_IDLE / 1024)) MiB, max sampled under load $((RSS_MAX / 1024)) MiB, VmHWM $((RSS_HWM / 1024)) MiB; memory tier bound $MEMORY_MB MiB (holds one key here)"
echo "cold stampede: $STAMPEDE_RES"
echo "  upstream requests: $UPSTREAM_REQUESTS (must be 1); max waiter latency - upstream delay: $(python3 -c "print(f'{$S_MAX - $UPSTREAM_DELAY_MS:.1f}')") ms"

[[ $UPSTREAM_REQUESTS == 1 ]] || die "single flight broken: $UPSTREAM_REQUESTS upstream requests for one key"
[[ $(field ok <<<"$STAMPEDE_RES") == "$STAMPEDE" ]] || die "not every stampede request got a 200"
