#!/usr/bin/env bash
# bigcache benchmark harness. Starts a fake origin, bigcache and nginx with an
# equivalent proxy_cache, drives them with wrk, prints one table per scenario.
# A row's cpu column is the server's CPU over the row (nginx's with its
# workers): below 100% on its one core, the client side was the limit.
#
#   bash bench/run.sh                 # every scenario
#   bash bench/run.sh hot stampede    # some of them
#
# Scenarios:
#   hot       hits on 1,000 warm 20 KB pages (bigcache vs nginx proxy_cache)
#   stampede  100 simultaneous requests for one uncached page, 200 ms origin
#   rest      REST API GET and POST with 20 KB values (and GETs of absent
#             keys, POSTs of new ones: the misses the store confirms)
#   sync      REST POSTs without and with --sync (fsync per write; not in
#             the default set)
#   soak      SOAK_MINUTES (30) of mixed hits, misses, purges and REST
#             writes at a fixed rate (~250 requests/s); RSS, open files and
#             threads sampled each minute (not in the default set)
#   cold      COLD_PAGES (200,000) pages read uniformly at random, far more
#             than the hot tier holds, while a writer adds 200 new pages/s
#             through the same server; ROUNDS (3) rounds interleaved
#             (bigcache, nginx, bigcache, ...) and the median of their
#             ratios (not in the default set: populating takes minutes)
#   diskcold  "cold" with both servers' data files dropped from the page
#             cache (posix_fadvise DONTNEED on every file) before each row,
#             so reads come from the disk; disk bytes read per request from
#             /proc/<pid>/io (not in the default set)
#   trace     the disk budget: TRACE_PAGES (1,000,000) incompressible pages of
#             TRACE_SIZE (4096) bytes, TRACE_REQUESTS (2,000,000) requests
#             by Zipf(0.9) popularity, then half as many mixed 1:1 with a
#             crawler walking every page once; --max-disk = 10% of the pages'
#             bytes. bigcache's hit ratio beside exact LRU and FIFO of the
#             same size on the same trace (bench/trace.py), the most the
#             data directory took, then hits on popular pages while a
#             writer adds WRITE_RATE pages/s with eviction running (not in
#             the default set: ~30 minutes; TRACE_BIN runs another binary)
#   front     hot hits as in "hot", ROUNDS (3) rounds interleaved: bigcache
#             alone, nginx proxy_cache alone, and the shipped
#             nginx/bigcache.conf in front of bigcache, over HTTPS (as
#             shipped) and over plain HTTP (its TLS server's listen made plain,
#             to show what TLS costs), to bigcache over loopback TCP and
#             over a Unix socket; nginx and bigcache share core 0
#   mix       browser traffic on keep-alive connections: a browser's
#             headers, 1/5 conditional (304), 1/20 a miss; bigcache against
#             nginx proxy_cache, ROUNDS (3) interleaved (BASELINE_BIN: another
#             build's row in each round too; not in the default set)
#   purge     PURGE_PAGES (100,000) cached pages purged by one DELETE
#             /prefix/, then as many tagged pages (two tags each) purged by
#             one DELETE /tag/ (PURGE_KINDS, "prefix tag"), while wrk reads
#             1,000 other warm pages and a writer adds WRITE_RATE new
#             pages/s: the purge's time, the readers' and the writer's
#             latency, slow store commands (BASELINE_BIN: the same for
#             another build, prefix only; not in the default set)
#   codings   the codings a stored text page could be kept in: bytes and
#             single-core speed of LZ4, gzip, brotli and zstd on Debian's
#             python3-doc HTML and the origin's pages (not in the default set)
#   browser   hits to browsers (their headers, Accept-Encoding: gzip,
#             deflate, br, zstd), each server keeping pages its way:
#             bigcache (brotli stored once, Django without GZipMiddleware),
#             nginx proxy_cache with gzip on at level 1 (compressing each
#             hit), nginx caching Django's gzip (GZipMiddleware, level 6).
#             Cold: BROWSER_PAGES (10,000) pages at random, bigcache with
#             --hot-cache-size 0 (every hit read from its files, as nginx's);
#             hot: KEYS pages, bigcache's RAM tier on. Bytes per hit;
#             ROUNDS (3) interleaved (not in the default set)
#   callgrind instructions per hot hit, user space, under valgrind's
#             callgrind: CG_REQUESTS (5,000) GETs on one keep-alive
#             connection cycling over 100 cached pages, counters zeroed
#             after warming; bigcache, nginx proxy_cache, bare hyper
#             (examples/ceiling.rs), and BASELINE_BIN when set; then
#             bigcache without a hot tier ("bigcache-cold": every hit read
#             from the store, as nginx reads every hit from its files).
#             Repeatable for a given binary (not in the default set)
#   scale     bigcache alone, grown to each of SCALE_PAGES (10k 100k 1M)
#             pages: RSS, disk against raw page bytes, and startup time to
#             the first served hit (not in the default set: 1M pages take
#             ~5 minutes and ~6 GB of disk)
#   esi       hits on a page whose menu is an ESI include against the same
#             page without, on keep-alive connections; then the example
#             Django site under gunicorn: a logged-in visitor's page with
#             per-user fragments (the shell cached) against its full
#             render, time to the page and Django CPU (bench/esi_site.py)
#
# Knobs (environment): DURATION (10s; in seconds), CONNS (32), KEYS (1000), SIZE (20480),
# COLD_PAGES (200000), WRITE_RATE (200), SCALE_PAGES ("10000 100000 1000000"),
# BASELINE_BIN (another bigcache binary, e.g. an earlier commit's build: the
# hot, cold, rest and sync scenarios then measure it too, in the same run,
# as "bigcache baseline" / "baseline"), FRESH_FS (1: the run's files on a
# fresh ext4 of their own, as root; 0: in /tmp).
# Servers run on core 0, wrk on core 1: check the machine is otherwise idle,
# and compare figures within one run only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
KEYS=${KEYS:-1000}
SIZE=${SIZE:-20480}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(hot stampede rest)

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light
need curl curl
cargo build --release --quiet

work=$(mktemp -d)
loop=""
# Each run's files (both servers' stores, nginx's cache) go on a fresh
# ext4 of their own: on the machine's long-lived filesystem a server's
# figure depended on what earlier runs had created and deleted there
# (ext4 passes over recently freed inodes when it allocates one; nginx
# creates a file for each page it caches). As root, where loop devices
# can be mounted; FRESH_FS=0 keeps the files in /tmp instead.
if [ "${FRESH_FS:-1}" = 1 ] && [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
    # 512k inodes, initialized now rather than by a kernel thread that
    # would be writing them during the first rounds.
    if truncate -s 32G "$work.img" &&
        mkfs.ext4 -q -F -i 65536 -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$work.img" &&
        loop=$(losetup -f --show --direct-io=on --sector-size 4096 "$work.img") && mount "$loop" "$work"; then
        # Without direct I/O (a backing filesystem that cannot), the image
        # is cached a second time below: diskcold's reads would be RAM's.
        echo "(files on a fresh ext4: $loop, $(du -h --apparent-size "$work.img" | cut -f1) sparse, direct I/O $(cat "/sys/block/${loop#/dev/}/loop/dio" 2>/dev/null || echo ?))"
    else
        [ -n "$loop" ] && losetup -d "$loop"
        loop=""
        rm -f "$work.img"
        echo "(no fresh filesystem could be made; files in $work)"
    fi
fi
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # Every nginx a scenario started (the browser scenario runs three).
    local f
    for f in $(find "$work" -name nginx.pid 2>/dev/null); do kill "$(cat "$f")" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # CG_KEEP=dir keeps callgrind's dumps for callgrind_annotate.
    [ -n "${CG_KEEP:-}" ] && { mkdir -p "$CG_KEEP"; cp "$work"/cg-*.* "$CG_KEEP"/ 2>/dev/null || true; }
    if [ -n "$loop" ]; then
        # nginx's master exits after its worker: busy until then.
        local i
        for i in $(seq 100); do umount "$work" 2>/dev/null && break; sleep 0.1; done
        # Still busy after 10 s: detached now, freed when the last user goes.
        mountpoint -q "$work" && { umount -l "$work" || true; }
        losetup -d "$loop" || true
        rm -f "$work.img"
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

start_origin() { # port delay [cores]: pinned to cores when given
    local pin=()
    [ -n "${3:-}" ] && pin=(taskset -c "$3")
    "${pin[@]}" python3 bench/origin.py --port "$1" --size "$SIZE" --delay "$2" &
    pids+=($!)
    wait_http "http://127.0.0.1:$1/__count"
}

launch_bigcache() { # name api proxy origin [binary] [flags...]
    local bin=${5:-target/release/bigcache}
    taskset -c 0 "$bin" --data-dir "$work/$1" --api-listen "127.0.0.1:$2" \
        --proxy-listen "127.0.0.1:$3" --upstream "http://127.0.0.1:$4" --log warn "${@:6}" >/dev/null 2>>"$work/$1.log" &
    pids+=($!)
    echo $! >"$work/$1.pid"
}

start_bigcache() { # name api proxy origin
    launch_bigcache "$@"
    wait_http "http://127.0.0.1:$2/healthz"
}

# Store commands that held a shard thread >= 20 ms (compactions); readers
# were answered from the directory and the entries meanwhile.
slow_commands() { grep -c "slow store command" "$work/$1.log" || true; }

# A /metrics value on API port $1: metric $2, or $2 divided by $3.
metric() {
    curl -s "http://127.0.0.1:$1/metrics" | awk -v a="$2" -v b="${3:-}" '
        $1 == a {x = $2} b != "" && $1 == b {y = $2}
        END { if (b == "") printf "%d", x; else if (y > 0) printf "%.1f", x / y; else printf "-" }'
}

start_nginx() { # port origin [tls_port]: with a TLS listener on tls_port too
    mkdir -p "$work/nginx-cache" "$work/nginx-tmp"
    local tls=""
    if [ -n "${3:-}" ]; then
        tls_cert
        tls="listen 127.0.0.1:$3 ssl; ssl_certificate $work/tls/cert.pem; ssl_certificate_key $work/tls/key.pem;"
    fi
    sed -e "s|listen 127.0.0.1:@PORT@;|listen 127.0.0.1:@PORT@; $tls|" \
        -e "s|@WORK@|$work|g" -e "s|@PORT@|$1|g" -e "s|@ORIGIN@|$2|g" bench/nginx.conf >"$work/nginx.conf"
    taskset -c 0 nginx -c "$work/nginx.conf" -p "$work"
    wait_http "http://127.0.0.1:$1/__count"
}

# Stops the nginx of start_nginx and waits for it to exit: its master
# removes its pid file as it goes, which would take the next one's.
stop_nginx() {
    local pid
    pid=$(cat "$work/nginx.pid")
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$work/nginx.pid"
}

# A self-signed certificate for 127.0.0.1 in $work/tls, made once.
tls_cert() {
    [ -f "$work/tls/cert.pem" ] && return 0
    mkdir -p "$work/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" \
        -days 2 -subj /CN=127.0.0.1 2>/dev/null
}

# Bytes a process and its children read from the disk so far.
io_read() {
    local p s=0
    for p in "$1" $(pgrep -P "$1" || true); do
        s=$((s + $(awk '/^read_bytes/ {print $2}' "/proc/$p/io" 2>/dev/null || echo 0)))
    done
    echo "$s"
}

# RSS of a process and its children (nginx's master + worker).
rss_kib() { ps -o rss= -p "$1" --ppid "$1" | awk '{s+=$1} END {print s}'; }
origin_count() { curl -s "http://127.0.0.1:$1/__count"; }

# Appended to every request script: wrk prints one machine-readable line.
cat >"$work/report.lua" <<'LUA'
-- Each distinct request formatted once (a script's method and fields are
-- fixed; the path picks it): wrk.format on every request kept wrk's core
-- busy whole in the hot rows, which then measured wrk.
local made = {}
function formatted(method, path, headers)
  local r = made[path]
  if r == nil then
    r = wrk.format(method, path, headers)
    made[path] = r
  end
  return r
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.2f %.2f %.2f %.2f %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
LUA

cat >"$work/pages.lua" <<LUA
math.randomseed(42)
request = function() return formatted("GET", "/page/" .. math.random(0, $KEYS - 1)) end
LUA

# CPU ticks (USER_HZ) used so far by process $1 and its children (nginx's
# workers are its master's).
cpu_ticks() {
    local p t=0 stat
    for p in "$1" $(ps -o pid= --ppid "$1"); do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        # After the command: fields 12 and 13 are utime and stime.
        t=$((t + $(awk '{print $12 + $13}' <<<"$stat")))
    done
    echo "$t"
}

# Core 1's time so far, busy and in all ("busy total"), in ticks: user,
# nice, system, irq and softirq are busy; idle, iowait and steal are not
# (guest time is counted inside user already).
core1_ticks() {
    awk '$1 == "cpu1" {b = $2 + $3 + $4 + $7 + $8; print b, b + $5 + $6 + $9}' /proc/stat
}

row() { # label script url pid origin_port|-
    local out t0 t1 secs b0 a0 b1 a1
    cat "$2" "$work/report.lua" >"$work/run.lua"
    # What earlier rows wrote reaches the disk before this one, not
    # during it: the kernel's writeback (and the loop device's) ran on the
    # servers' core and slowed whichever row came after the writer.
    sync
    t0=$(cpu_ticks "$4")
    read -r b0 a0 <<<"$(core1_ticks)"
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -s "$work/run.lua" "$3" | grep '^RESULT')
    read -r b1 a1 <<<"$(core1_ticks)"
    t1=$(cpu_ticks "$4")
    read -r _ rps p50 p99 p999 max errs <<<"$out"
    secs=${DURATION%s}
    # "client": how busy wrk's core was (wrk, and the origin where it
    # shares it). Near 100%, the row measured the client, not the server.
    printf "%-22s %9s %8s %8s %8s %8s %7s %9s %7s %5s %6s\n" "$1" "$rps" "$p50" "$p99" "$p999" "$max" "$errs" \
        "$(($(rss_kib "$4") / 1024))MB" "$([ "$5" = - ] && echo - || origin_count "$5")" \
        "$(((t1 - t0) * 100 / ($(getconf CLK_TCK) * secs)))%" "$(((b1 - b0) * 100 / (a1 - a0 > 0 ? a1 - a0 : 1)))%"
}

# Waits (at most 30 s) until the given servers are idle: under 2% of a
# core over half a second. A row must not pay for the work the previous
# row left behind in another server on the same core (bigcache's LevelDB
# compactions and brotli encodings after a run of misses).
settle() { # pid...
    local i t0 t1 p
    for i in $(seq 60); do
        t0=0; for p in "$@"; do t0=$((t0 + $(cpu_ticks "$p"))); done
        sleep 0.5
        t1=0; for p in "$@"; do t1=$((t1 + $(cpu_ticks "$p"))); done
        [ $((t1 - t0)) -le $(($(getconf CLK_TCK) / 100)) ] && return 0
    done
    echo "  (servers still busy after 30 s)" >&2
}

# bigcache's text pages by how they were stored (`/stat`'s
# proxy.compressed): first encodings, left as sent and why, encoded later.
packed() { # api_port
    curl -s "http://127.0.0.1:$1/stat" | python3 -c 'import json,sys; print(json.load(sys.stdin)["proxy"]["compressed"])'
}

header() {
    printf "%-22s %9s %8s %8s %8s %8s %7s %9s %7s %5s %6s\n" server req/s p50ms p99ms p99.9ms maxms errors RSS origin cpu client
}

scenario_diskcold() { DISK_COLD=1 scenario_cold; }

# Prints each round's pair of ratios ("a b", one argument per round) and
# the median of each: round_ratios name1 target1 name2 target2 pair...
round_ratios() {
    local n1=$1 t1=$2 n2=$3 t2=$4 i=0 line mid
    shift 4
    for line in "$@"; do
        i=$((i + 1))
        echo "  round $i: $n1 ${line% *}, $n2 ${line#* }"
    done
    echo "  median of $# rounds: $n1 $(median_of 1 "$@") ($t1), $n2 $(median_of 2 "$@") ($t2)"
}

# The median of column $1 of the pairs, each part of an "a/b" value on its
# own (the TCP and the Unix socket ratios are two medians, not one row's).
median_of() { # column pair...
    local col=$1 parts p out=() mid
    shift
    mid=$(( ($# + 1) / 2 ))
    parts=$(printf '%s\n' "$@" | awk -v c="$col" '{print $c}' | head -1 | awk -F/ '{print NF}')
    for p in $(seq "$parts"); do
        out+=("$(printf '%s\n' "$@" | awk -v c="$col" '{print $c}' | cut -d/ -f"$p" | sort -n | sed -n "${mid}p")")
    done
    (IFS=/; echo "${out[*]}")
}

scenario_hot() {
    echo "== hot hits: $KEYS pages of $SIZE bytes, wrk -t1 -c$CONNS -d$DURATION, servers on core 0"
    local o b_api b_proxy n_port
    o=$(free_port); b_api=$(free_port); b_proxy=$(free_port); n_port=$(free_port)
    start_origin "$o" 0
    start_bigcache hot "$b_api" "$b_proxy" "$o"
    start_nginx "$n_port" "$o"
    # Warm both caches: every page once through each.
    curl -s -o /dev/null "http://127.0.0.1:$b_proxy/page/[0-$((KEYS - 1))]"
    curl -s -o /dev/null "http://127.0.0.1:$n_port/page/[0-$((KEYS - 1))]"
    curl -s -o /dev/null -D - "http://127.0.0.1:$b_proxy/page/1" | grep -i '^x-cache' | sed 's/^/  bigcache /'
    curl -s -o /dev/null -D - "http://127.0.0.1:$n_port/page/1" | grep -i '^x-cache' | sed 's/^/  nginx    /'
    local base_proxy=""
    if [ -n "${BASELINE_BIN:-}" ]; then
        base_proxy=$(free_port)
        start_bigcache hot-base "$(free_port)" "$base_proxy" "$o" "$BASELINE_BIN"
        curl -s -o /dev/null "http://127.0.0.1:$base_proxy/page/[0-$((KEYS - 1))]"
    fi
    cargo build --release --example ceiling -q
    local c_port
    c_port=$(free_port)
    taskset -c 0 target/release/examples/ceiling "$c_port" "$SIZE" >/dev/null &
    pids+=($!)
    local c_pid=$!
    wait_http "http://127.0.0.1:$c_port/page/0"
    # Rounds interleaved (bigcache, nginx, ceiling, bigcache, ...): the
    # host's speed drifts within minutes, ratios within a round do not.
    local rounds=${ROUNDS:-3} r line b n c ratios=()
    header
    for r in $(seq "$rounds"); do
        line=$(row "bigcache r$r" "$work/pages.lua" "http://127.0.0.1:$b_proxy" "$(cat "$work/hot.pid")" "$o"); echo "$line"
        b=$(awk '{print $3}' <<<"$line")
        if [ -n "$base_proxy" ]; then
            row "baseline r$r" "$work/pages.lua" "http://127.0.0.1:$base_proxy" "$(cat "$work/hot-base.pid")" "$o"
        fi
        line=$(row "nginx r$r" "$work/pages.lua" "http://127.0.0.1:$n_port" "$(cat "$work/nginx.pid")" "$o"); echo "$line"
        n=$(awk '{print $3}' <<<"$line")
        line=$(row "bare-hyper r$r" "$work/pages.lua" "http://127.0.0.1:$c_port" "$c_pid" -); echo "$line"
        c=$(awk '{print $3}' <<<"$line")
        ratios+=("$(awk -v b="$b" -v n="$n" -v c="$c" 'BEGIN {printf "%.2f %.2f", b / n, b / c}')")
    done
    round_ratios bigcache/nginx "target >= 1.5" "bigcache/bare hyper" "target >= 0.90" "${ratios[@]}"
    kill "$c_pid"
    stop_nginx
}

# nginx/bigcache.conf as shipped in front of bigcache at $3 (an address,
# or unix:/path), listening on $2 over TLS and on $4 over plain HTTP;
# 127.0.0.1 is added to its names (the Host wrk sends) and its catch-all
# servers get ports of their own, since a client sends no TLS server name
# for an IP address. Its files are under $work/$1.
start_front() { # name tls_port upstream plain_port
    local d=$work/$1
    mkdir -p "$d"
    tls_cert
    sed -e '/listen \[::\]/d' \
        -e "s|listen 443 ssl http2;|listen 127.0.0.1:$2 ssl http2; listen 127.0.0.1:$4;|" \
        -e "s|listen 443 ssl default_server;|listen 127.0.0.1:$(free_port) ssl default_server;|" \
        -e "s|listen 80;|listen 127.0.0.1:$(free_port);|" \
        -e "s|listen 80 default_server;|listen 127.0.0.1:$(free_port) default_server;|" \
        -e "s|server_name www.example.org example.org;|server_name www.example.org example.org 127.0.0.1;|" \
        -e "s|server unix:/run/bigcache/proxy.sock;|server $3;|" \
        -e "s|server 127.0.0.1:8080;|server $3;|" \
        -e "s|/etc/letsencrypt/live/www.example.org/fullchain.pem|$work/tls/cert.pem|" \
        -e "s|/etc/letsencrypt/live/www.example.org/privkey.pem|$work/tls/key.pem|" \
        nginx/bigcache.conf >"$d/site.conf"
    cat >"$d/nginx.conf" <<CONF
worker_processes 1;
user root;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
    include $d/site.conf;
}
CONF
    taskset -c 0 nginx -e "$d/error.log" -c "$d/nginx.conf" -p "$d"
    wait_http "http://127.0.0.1:$4/__count"
}

scenario_front() {
    local rounds=${ROUNDS:-3}
    echo "== nginx in front: hot hits on $KEYS pages of $SIZE bytes, wrk -t1 -c$CONNS -d$DURATION, $rounds interleaved rounds, servers on core 0"
    local o b_api b_proxy n_port n_tls f_tls f_plain u_api u_tls u_plain sock=$work/proxy.sock
    o=$(free_port); b_api=$(free_port); b_proxy=$(free_port); n_port=$(free_port); n_tls=$(free_port)
    f_tls=$(free_port); f_plain=$(free_port); u_api=$(free_port); u_tls=$(free_port); u_plain=$(free_port)
    start_origin "$o" 0
    start_bigcache front "$b_api" "$b_proxy" "$o" target/release/bigcache --trusted-proxy 127.0.0.1/32
    # The same behind a Unix socket (its own data directory).
    taskset -c 0 target/release/bigcache --data-dir "$work/front-unix" --api-listen "127.0.0.1:$u_api" \
        --proxy-listen "unix:$sock" --upstream "http://127.0.0.1:$o" --log warn --trusted-proxy 127.0.0.1/32 \
        >/dev/null 2>>"$work/front-unix.log" &
    pids+=($!)
    local upid=$!
    wait_http "http://127.0.0.1:$u_api/healthz"
    start_nginx "$n_port" "$o" "$n_tls"
    start_front front "$f_tls" "127.0.0.1:$b_proxy" "$f_plain"
    start_front front-unix "$u_tls" "unix:$sock" "$u_plain"
    # Each way in is its own site to bigcache (scheme and Host): warm each.
    local url
    for url in "http://127.0.0.1:$b_proxy" "http://127.0.0.1:$f_plain" "https://127.0.0.1:$f_tls" \
        "http://127.0.0.1:$u_plain" "https://127.0.0.1:$u_tls" "http://127.0.0.1:$n_port"; do
        curl -sk -o /dev/null "$url/page/[0-$((KEYS - 1))]"
    done
    curl -s -o /dev/null -D - "http://127.0.0.1:$f_plain/page/1" | grep -i '^x-cache' | sed 's/^/  nginx -> bigcache /'
    curl -sk -o /dev/null -D - "https://127.0.0.1:$f_tls/page/1" | grep -i '^x-cache' | sed 's/^/  nginx -> bigcache, TLS /'
    curl -s -o /dev/null -D - "http://127.0.0.1:$u_plain/page/1" | grep -i '^x-cache' | sed 's/^/  nginx -> bigcache, unix socket /'
    header
    local front_pid ufront_pid bpid npid line n ns fh fs uh us ratios=()
    front_pid=$(cat "$work/front/nginx.pid"); ufront_pid=$(cat "$work/front-unix/nginx.pid")
    bpid=$(cat "$work/front.pid"); npid=$(cat "$work/nginx.pid")
    rate() { awk '{print $2}' <<<"$1"; }
    for r in $(seq "$rounds"); do
        echo "  round $r"
        row "bigcache" "$work/pages.lua" "http://127.0.0.1:$b_proxy" "$bpid" "$o"
        line=$(row "nginx proxy_cache" "$work/pages.lua" "http://127.0.0.1:$n_port" "$npid" "$o"); echo "$line"; n=$(awk '{print $3}' <<<"$line")
        line=$(row "nginx->bigcache http" "$work/pages.lua" "http://127.0.0.1:$f_plain" "$front_pid" "$o"); echo "$line"; fh=$(awk '{print $3}' <<<"$line")
        line=$(row "  via unix socket" "$work/pages.lua" "http://127.0.0.1:$u_plain" "$ufront_pid" "$o"); echo "$line"; uh=$(awk '{print $4}' <<<"$line")
        line=$(row "nginx proxy_cache https" "$work/pages.lua" "https://127.0.0.1:$n_tls" "$npid" "$o"); echo "$line"; ns=$(awk '{print $4}' <<<"$line")
        line=$(row "nginx->bigcache https" "$work/pages.lua" "https://127.0.0.1:$f_tls" "$front_pid" "$o"); echo "$line"; fs=$(awk '{print $3}' <<<"$line")
        line=$(row "  via unix socket" "$work/pages.lua" "https://127.0.0.1:$u_tls" "$ufront_pid" "$o"); echo "$line"; us=$(awk '{print $4}' <<<"$line")
        ratios+=("$(awk -v n="$n" -v s="$ns" -v a="$fh" -v b="$uh" -v c="$fs" -v d="$us" 'BEGIN {printf "%.2f/%.2f %.2f/%.2f", a / n, b / n, c / s, d / s}')")
    done
    round_ratios "http (tcp/unix) vs nginx alone over http" "target >= 0.65" "https (tcp/unix) vs nginx alone over https" "target >= 0.65" "${ratios[@]}"
    echo "  (RSS of the nginx->bigcache rows is nginx's alone; bigcache's is in its own row)"
    kill "$front_pid" "$ufront_pid" "$upid"
    stop_nginx
    while kill -0 "$front_pid" 2>/dev/null || kill -0 "$ufront_pid" 2>/dev/null; do sleep 0.05; done
}

# Browser traffic on long keep-alive connections: a browser's headers
# (Accept-Encoding, an analytics cookie), one request in five conditional
# (If-None-Match with the page's ETag: a 304), one in twenty a page not
# cached yet (a miss, stored). Rounds interleaved, bigcache against nginx.
scenario_mix() {
    local rounds=${ROUNDS:-3}
    echo "== browser mix: $KEYS warm pages of $SIZE bytes, 1/5 conditional, 1/20 a miss, browser headers, wrk -t1 -c$CONNS -d$DURATION, $rounds interleaved rounds; the origin on wrk's core"
    local o b_api b_proxy n_port a_api a_proxy
    o=$(free_port); b_api=$(free_port); b_proxy=$(free_port); n_port=$(free_port)
    # Django runs elsewhere than the cache: the origin shares wrk's core,
    # not the servers' (unpinned, it took a varying share of core 0).
    start_origin "$o" 0 1
    start_bigcache mix "$b_api" "$b_proxy" "$o"
    if [ -n "${BASELINE_BIN:-}" ]; then
        a_api=$(free_port); a_proxy=$(free_port)
        start_bigcache mix-baseline "$a_api" "$a_proxy" "$o" "$BASELINE_BIN"
    fi
    start_nginx "$n_port" "$o"
    curl -s -o /dev/null "http://127.0.0.1:$b_proxy/page/[0-$((KEYS - 1))]"
    [ -n "${BASELINE_BIN:-}" ] && curl -s -o /dev/null "http://127.0.0.1:$a_proxy/page/[0-$((KEYS - 1))]"
    curl -s -o /dev/null "http://127.0.0.1:$n_port/page/[0-$((KEYS - 1))]"
    cat >"$work/mix.lua" <<LUA
math.randomseed(42)
local n = 0
local run = os.getenv("RUN_ID") or "0"
-- A browser sends back the validator it was given: bigcache's brotli
-- representation has its own (the page's ETag with -br, RFC 9110 8.8.3).
local etag_suffix = os.getenv("ETAG_SUFFIX") or ""
-- A browser's fields, in a browser's order. Every request is built once,
-- in init: wrk.format on each request took a tenth of wrk's core, which
-- is shared with the origin and was close to full in bigcache's rows.
local browser = "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n" ..
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" ..
  "Accept-Language: en-US,en;q=0.5\r\n" ..
  "Accept-Encoding: gzip, deflate, br, zstd\r\n" ..
  "Cookie: _ga=GA1.1.1234567890.1700000000; _gid=GA1.1.987654321.1700000000\r\n" ..
  "Upgrade-Insecure-Requests: 1\r\n"
local plain, conditional, miss_head, miss_tail = {}, {}, nil, nil
init = function(args)
  local host = "Host: " .. wrk.headers["Host"] .. "\r\n"
  for i = 0, $KEYS - 1 do
    local p = "/page/" .. i
    plain[i] = "GET " .. p .. " HTTP/1.1\r\n" .. host .. browser .. "\r\n"
    conditional[i] = "GET " .. p .. " HTTP/1.1\r\n" .. host .. browser ..
      'If-None-Match: "' .. p .. etag_suffix .. '"\r\n\r\n'
  end
  miss_head = "GET /fresh/" .. run .. "/"
  miss_tail = " HTTP/1.1\r\n" .. host .. browser .. "\r\n"
end
request = function()
  n = n + 1
  if n % 20 == 0 then
    return miss_head .. n .. miss_tail
  end
  local i = math.random(0, $KEYS - 1)
  if n % 5 == 0 then
    return conditional[i]
  end
  return plain[i]
end
LUA
    # The validator each server gives a browser, and the 304 it answers
    # when the browser sends it back: checked, or the conditional requests
    # would be full answers on one side.
    # bigcache encodes the warm-up's pages in brotli meanwhile; those whose
    # first encoding found the encoder busy (a thousand fills at once, as
    # no Django renders them) are encoded at their next hit while it is
    # idle: one sequential read of each, as a site's own traffic would
    # read them, leaves the warm set as it stays.
    local pass encoded api_port proxy_port
    for api_port in "$b_api" ${a_api:+"$a_api"}; do
        proxy_port=$b_proxy; [ "$api_port" = "$b_api" ] || proxy_port=$a_proxy
        for pass in 1 2 3 4 5 6 7 8; do
            settle "$(cat "$work/mix.pid")" ${a_api:+"$(cat "$work/mix-baseline.pid")"}
            encoded=$(curl -s "http://127.0.0.1:$api_port/stat" | python3 -c 'import json,sys; c=json.load(sys.stdin)["proxy"]["compressed"]; print(c["br"] + c["recoded"])')
            [ "$encoded" -ge "$KEYS" ] && break
            curl -s -o /dev/null -H "Accept-Encoding: gzip, deflate, br, zstd" "http://127.0.0.1:$proxy_port/page/[0-$((KEYS - 1))]"
        done
    done
    local ae="Accept-Encoding: gzip, deflate, br, zstd" b_etag n_etag
    b_etag=$(curl -s -D - -o /dev/null -H "$ae" "http://127.0.0.1:$b_proxy/page/7" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
    n_etag=$(curl -s -D - -o /dev/null -H "$ae" "http://127.0.0.1:$n_port/page/7" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
    local b_suffix=${b_etag#\"/page/7} n_suffix=${n_etag#\"/page/7}
    b_suffix=${b_suffix%\"}; n_suffix=${n_suffix%\"}
    local b_304 n_304
    b_304=$(curl -s -o /dev/null -w '%{http_code}' -H "$ae" -H "If-None-Match: $b_etag" "http://127.0.0.1:$b_proxy/page/7")
    n_304=$(curl -s -o /dev/null -w '%{http_code}' -H "$ae" -H "If-None-Match: $n_etag" "http://127.0.0.1:$n_port/page/7")
    echo "  ETag sent to a browser: bigcache $b_etag, nginx $n_etag; If-None-Match with it: bigcache $b_304, nginx $n_304"
    [ "$b_304" = 304 ] && [ "$n_304" = 304 ] && [ "$b_suffix" = -br ] || {
        echo "  the conditional requests would not be 304s on both sides: no figures"; stop_nginx; return 1; }
    # Every page stored in brotli, or some conditionals would be full answers.
    echo "  bigcache's text pages (first encodings, and pages encoded later): $(packed "$b_api")"
    header
    local line b n a ratios=() bpid npid apid=""
    bpid=$(cat "$work/mix.pid"); npid=$(cat "$work/nginx.pid")
    [ -n "${a_api:-}" ] && apid=$(cat "$work/mix-baseline.pid")
    for r in $(seq "$rounds"); do
        settle "$bpid" "$npid" $apid
        line=$(ETAG_SUFFIX="$b_suffix" RUN_ID="b$r" row "bigcache r$r" "$work/mix.lua" "http://127.0.0.1:$b_proxy" "$bpid" "$o"); echo "$line"
        b=$(awk '{print $3}' <<<"$line")
        a=-
        if [ -n "$apid" ]; then
            settle "$bpid" "$npid" $apid
            line=$(ETAG_SUFFIX="$b_suffix" RUN_ID="a$r" row "baseline r$r" "$work/mix.lua" "http://127.0.0.1:$a_proxy" "$apid" "$o"); echo "$line"
            a=$(awk '{print $3}' <<<"$line")
        fi
        settle "$bpid" "$npid" $apid
        line=$(ETAG_SUFFIX="$n_suffix" RUN_ID="n$r" row "nginx r$r" "$work/mix.lua" "http://127.0.0.1:$n_port" "$npid" "$o"); echo "$line"
        n=$(awk '{print $3}' <<<"$line")
        ratios+=("$(awk -v b="$b" -v n="$n" -v a="$a" 'BEGIN {printf "%.2f %s", b / n, (a == "-" ? "-" : sprintf("%.2f", b / a))}')")
    done
    round_ratios bigcache/nginx "target >= 1.5" "$([ -n "$apid" ] && echo bigcache/baseline || echo -)" "-" "${ratios[@]}"
    echo "  quick (fast-path) hits: $(curl -s "http://127.0.0.1:$b_api/stat" | python3 -c 'import json,sys; print(json.load(sys.stdin)["proxy"]["quick_hits"])')"
    echo "  bigcache's text pages after the rounds: $(packed "$b_api")"
    stop_nginx
}

scenario_purge() {
    local pages=${PURGE_PAGES:-100000}
    echo "== purge at scale: $pages cached pages of $SIZE bytes purged by one DELETE while wrk reads $KEYS other warm pages, -d$DURATION"
    local o targets=(bigcache)
    [ -n "${BASELINE_BIN:-}" ] && targets=(baseline bigcache)
    o=$(free_port)
    start_origin "$o" 0
    header
    for target in "${targets[@]}"; do
        local api proxy bin=target/release/bigcache kinds kind
        read -r -a kinds <<<"${PURGE_KINDS:-prefix tag}"
        # An older build has no tags.
        [ "$target" = baseline ] && { bin=$BASELINE_BIN; kinds=(prefix); }
        api=$(free_port); proxy=$(free_port)
        start_bigcache "purge-$target" "$api" "$proxy" "$o" "$bin"
        curl -s -o /dev/null "http://127.0.0.1:$proxy/page/[0-$((KEYS - 1))]"
        for kind in "${kinds[@]}"; do
            local prefix=doomed url
            if [ "$kind" = tag ]; then
                prefix=tagged; url="http://127.0.0.1:$api/tag/bench-all"
            else
                url="http://127.0.0.1:$api/prefix/doomed/"
            fi
            python3 bench/populate.py 127.0.0.1 "$proxy" "$prefix" "$pages" >/dev/null
            sync; sleep 2
            local slow_before t0 t1 answer
            slow_before=$(slow_commands "purge-$target")
            taskset -c 1 python3 bench/writer.py 127.0.0.1 "$proxy" "${WRITE_RATE:-200}" "${DURATION%s}" "new-$target-$kind" >"$work/writer.txt" &
            local wpid=$!
            row "$target $kind" "$work/pages.lua" "http://127.0.0.1:$proxy" "$(cat "$work/purge-$target.pid")" "$o" >"$work/purge-row.txt" &
            local rpid=$!
            sleep 2
            t0=$(date +%s%N)
            answer=$(curl -s -X DELETE "$url")
            t1=$(date +%s%N)
            wait $rpid
            wait $wpid
            cat "$work/purge-row.txt"
            echo "  $(cat "$work/writer.txt")"
            echo "  $target, $kind: purge took $(( (t1 - t0) / 1000000 )) ms: $answer; slow store commands: $(( $(slow_commands "purge-$target") - slow_before ))"
            if [ "$kind" = tag ]; then
                echo "  tag index after the purge: $(curl -s "http://127.0.0.1:$api/stat/count")"
            fi
        done
        kill "$(cat "$work/purge-$target.pid")"
    done
}

# Runs the load of the callgrind scenario against a server already under
# callgrind: warms 100 pages, zeroes the counters, sends CG_REQUESTS GETs on
# one connection, dumps; prints instructions per request.
# Seconds between the warm-up and the zeroing of the counters: the pages
# the warm-up stored are each encoded once in brotli on bigcache's encoder
# thread (about 2 s for 100 pages under valgrind), work of the fill, not of
# the hits counted after it; then each page is read once as the hits will
# read it (a client without br has its decoded copy made there).
CG_SETTLE=${CG_SETTLE:-8}

cg_measure() { # label port valgrind_pid out_prefix
    local n=${CG_REQUESTS:-5000} cfg="$work/cg-urls.txt" i
    : >"$cfg"
    for i in $(seq 0 $((n - 1))); do
        printf 'url = "http://127.0.0.1:%s/page/%d"\noutput = /dev/null\n' "$2" $((i % 100)) >>"$cfg"
    done
    curl -s -o /dev/null "http://127.0.0.1:$2/page/[0-99]"
    curl -s -o /dev/null "http://127.0.0.1:$2/page/[0-99]"
    sleep "$CG_SETTLE"
    curl -s -o /dev/null "http://127.0.0.1:$2/page/[0-99]"
    callgrind_control -z "$3" >/dev/null 2>&1
    curl -s -K "$cfg"
    callgrind_control -d "$3" >/dev/null 2>&1
    sleep 1
    # The dump after the zeroing: its totals are the load's alone.
    local last total
    last=$(ls -t "$4".* | head -1)
    total=$(grep -h '^totals:\|^summary:' "$last" | head -1 | awk '{print $2}')
    printf "%-22s %14s %12s\n" "$1" "$total" "$(( total / n ))"
    kill "$3" 2>/dev/null || true
    wait "$3" 2>/dev/null || true
}

# The same as traffic arrives (bench/keepalive.py): the connection first
# carries each page's miss, a conditional request, a credentialed one and
# a browser's, then CG_REQUESTS hits (flags: --browser for a browser's
# headers on them). The client talks to client_port: the server itself,
# or a front in front of it; only the server under callgrind is counted.
cg_traffic() { # label valgrind_pid out_prefix client_port [keepalive.py flags...]
    local n=${CG_REQUESTS:-5000} last total
    python3 bench/keepalive.py --port "$4" --pages 100 --hits "$n" \
        --settle "$CG_SETTLE" --between "callgrind_control -z $2 >/dev/null 2>&1" \
        --after "callgrind_control -d $2 >/dev/null 2>&1" "${@:5}"
    sleep 1
    last=$(ls -t "$3".* | head -1)
    total=$(grep -h '^totals:\|^summary:' "$last" | head -1 | awk '{print $2}')
    printf "%-22s %14s %12s\n" "$1" "$total" "$(( total / n ))"
}

# bigcache under callgrind on $1 (proxy port); extra flags after it.
cg_bigcache() { # port label [flags...]
    # shellcheck disable=SC2086 # flags are words
    valgrind --tool=callgrind --callgrind-out-file="$work/cg-$2.%p" \
        target/release/bigcache --data-dir "$work/cg-data-$2" --api-listen "127.0.0.1:$(free_port)" \
        --proxy-listen "127.0.0.1:$1" --upstream "http://127.0.0.1:$o" --log warn "${@:3}" >/dev/null 2>>"$work/cg.log" &
    cg_pid=$!
    wait_http "http://127.0.0.1:$1/__count"
}

# Behind nginx/bigcache.conf as shipped (plain HTTP side): bigcache sees
# nginx's forwarding fields on an upstream keep-alive connection.
cg_fronted() { # origin_port
    local port cg_pid f_tls f_plain
    port=$(free_port)
    cg_bigcache "$port" fronted --trusted-proxy 127.0.0.1/32
    f_tls=$(free_port); f_plain=$(free_port)
    start_front front "$f_tls" "127.0.0.1:$port" "$f_plain"
    cg_traffic "nginx->bigcache" "$cg_pid" "$work/cg-fronted.$cg_pid" "$f_plain"
    cg_traffic "nginx->bigcache, browser" "$cg_pid" "$work/cg-fronted.$cg_pid" "$f_plain" --browser
    kill "$(cat "$work/front/nginx.pid")" "$cg_pid"; wait "$cg_pid" 2>/dev/null || true
}

scenario_callgrind() {
    command -v valgrind >/dev/null || { echo "callgrind: valgrind is not installed (apt-get install valgrind)"; return 1; }
    echo "== instructions per hot hit: ${CG_REQUESTS:-5000} keep-alive GETs over 100 cached pages of $SIZE bytes, under callgrind (user space, every thread)"
    cargo build --release --example ceiling -q
    local o port pid
    o=$(free_port)
    start_origin "$o" 0
    printf "%-22s %14s %12s\n" server instructions per-request
    local bins=(target/release/bigcache) labels=(bigcache)
    [ -n "${BASELINE_BIN:-}" ] && { bins+=("$BASELINE_BIN"); labels+=(baseline); }
    # "cold": no hot tier, so every hit is read from the store (LevelDB,
    # then the blob file, decompressed), from the OS page cache as nginx
    # reads its cache files: instructions per cold hit.
    local flags=()
    for i in "${!bins[@]}"; do flags+=(""); done
    bins+=(target/release/bigcache); labels+=(bigcache-cold); flags+=("--hot-cache-size 0")
    # CG_ONLY=fronted: only the rows behind nginx (a quicker loop while
    # working on that path).
    [ "${CG_ONLY:-}" = fronted ] && bins=() labels=()
    for i in "${!bins[@]}"; do
        port=$(free_port)
        # shellcheck disable=SC2086 # flags are words
        valgrind --tool=callgrind --callgrind-out-file="$work/cg-${labels[$i]}.%p" \
            "${bins[$i]}" --data-dir "$work/cg-data-${labels[$i]}" --api-listen "127.0.0.1:$(free_port)" \
            --proxy-listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$o" --log warn ${flags[$i]:-} >/dev/null 2>>"$work/cg.log" &
        pid=$!
        wait_http "http://127.0.0.1:$port/__count"
        cg_measure "${labels[$i]}" "$port" "$pid" "$work/cg-${labels[$i]}.$pid"
    done
    local cg_pid
    [ "${CG_ONLY:-}" = fronted ] && { cg_fronted "$o"; return; }
    port=$(free_port)
    mkdir -p "$work/nginx-cache" "$work/nginx-tmp"
    sed -e "s|@WORK@|$work|g" -e "s|@PORT@|$port|g" -e "s|@ORIGIN@|$o|g" \
        -e "s|^daemon on;|daemon off; master_process off;|" bench/nginx.conf >"$work/nginx-cg.conf"
    valgrind --tool=callgrind --callgrind-out-file="$work/cg-nginx.%p" nginx -c "$work/nginx-cg.conf" -p "$work" 2>>"$work/cg.log" &
    pid=$!
    wait_http "http://127.0.0.1:$port/__count"
    cg_measure "nginx proxy_cache" "$port" "$pid" "$work/cg-nginx.$pid"
    port=$(free_port)
    valgrind --tool=callgrind --callgrind-out-file="$work/cg-ceiling.%p" \
        target/release/examples/ceiling "$port" "$SIZE" >/dev/null 2>>"$work/cg.log" &
    pid=$!
    wait_http "http://127.0.0.1:$port/page/0"
    cg_measure "bare hyper" "$port" "$pid" "$work/cg-ceiling.$pid"

    echo "  as traffic arrives: the connection carried misses, 304s, bypasses first"
    port=$(free_port)
    cg_bigcache "$port" after-misses
    cg_traffic "bigcache" "$cg_pid" "$work/cg-after-misses.$cg_pid" "$port"
    kill "$cg_pid"; wait "$cg_pid" 2>/dev/null || true
    port=$(free_port)
    cg_bigcache "$port" browser
    cg_traffic "bigcache, browser" "$cg_pid" "$work/cg-browser.$cg_pid" "$port" --browser
    kill "$cg_pid"; wait "$cg_pid" 2>/dev/null || true
    cg_fronted "$o"
    port=$(free_port)
    sed -e "s|@WORK@|$work|g" -e "s|@PORT@|$port|g" -e "s|@ORIGIN@|$o|g" \
        -e "s|^daemon on;|daemon off; master_process off;|" -e "s|nginx-cache|nginx-cache-2|" \
        bench/nginx.conf >"$work/nginx-cg2.conf"
    mkdir -p "$work/nginx-cache-2"
    valgrind --tool=callgrind --callgrind-out-file="$work/cg-nginx2.%p" nginx -c "$work/nginx-cg2.conf" -p "$work" 2>>"$work/cg.log" &
    pid=$!
    wait_http "http://127.0.0.1:$port/__count"
    cg_traffic "nginx proxy_cache, browser" "$pid" "$work/cg-nginx2.$pid" "$port" --browser
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "  target: bigcache <= 12,000 per hit as traffic arrives, behind nginx too"
}

# ESI: hits on a page whose menu is an include (a shell, and a fragment
# that is a hit too) against hits on the same page without ESI, anonymous
# GETs on keep-alive connections; then the example Django site under
# gunicorn behind bigcache, a logged-in visitor's dataset page with two
# per-user fragments (the shell cached) against its full render.
scenario_esi() {
    echo "== esi: $KEYS pages of $SIZE bytes, with and without one include, wrk -t1 -c$CONNS -d$DURATION, bigcache on core 0"
    local o b_api b_proxy
    o=$(free_port); b_api=$(free_port); b_proxy=$(free_port)
    start_origin "$o" 0
    start_bigcache esi "$b_api" "$b_proxy" "$o"
    cat >"$work/esi.lua" <<LUA
math.randomseed(42)
request = function() return formatted("GET", "/esi/" .. math.random(0, $KEYS - 1)) end
LUA
    curl -s -o /dev/null "http://127.0.0.1:$b_proxy/page/[0-$((KEYS - 1))]"
    curl -s -o /dev/null "http://127.0.0.1:$b_proxy/esi/[0-$((KEYS - 1))]"
    curl -s "http://127.0.0.1:$b_proxy/esi/1" | grep -q '<nav>' || { echo "esi: the include was not assembled"; return 1; }
    local rounds=${ROUNDS:-3} r line p e p99p p99e ratios=()
    header
    for r in $(seq "$rounds"); do
        line=$(row "plain r$r" "$work/pages.lua" "http://127.0.0.1:$b_proxy" "$(cat "$work/esi.pid")" "$o"); echo "$line"
        p=$(awk '{print $3}' <<<"$line"); p99p=$(awk '{print $5}' <<<"$line")
        line=$(row "esi r$r" "$work/esi.lua" "http://127.0.0.1:$b_proxy" "$(cat "$work/esi.pid")" "$o"); echo "$line"
        e=$(awk '{print $3}' <<<"$line"); p99e=$(awk '{print $5}' <<<"$line")
        ratios+=("$(awk -v p="$p" -v e="$e" -v a="$p99p" -v b="$p99e" 'BEGIN {printf "%.2f %.2f", e / p, b / a}')")
    done
    round_ratios "esi/plain req/s" "target >= 0.7" "esi/plain p99" "lower is better" "${ratios[@]}"
    if [ -x .venv/bin/python ] && .venv/bin/python -c 'import django, gunicorn' 2>/dev/null; then
        BIGCACHE_BIN=target/release/bigcache .venv/bin/python bench/esi_site.py
    else
        echo "  (the Django part needs .venv with the connector's test extra: see docs/development.md)"
    fi
}

scenario_stampede() {
    echo "== stampede: 100 simultaneous requests for one uncached page, origin delay 200 ms"
    local o b_api b_proxy n_port
    o=$(free_port); b_api=$(free_port); b_proxy=$(free_port); n_port=$(free_port)
    start_origin "$o" 200
    start_bigcache stampede "$b_api" "$b_proxy" "$o"
    start_nginx "$n_port" "$o"
    local before
    before=$(origin_count "$o")
    echo "  bigcache: $(python3 bench/stampede.py "http://127.0.0.1:$b_proxy/stampede/1" 100 200), origin requests: $(($(origin_count "$o") - before))"
    before=$(origin_count "$o")
    echo "  nginx:    $(python3 bench/stampede.py "http://127.0.0.1:$n_port/stampede/1" 100 200), origin requests: $(($(origin_count "$o") - before))"
    stop_nginx
}

rest_scripts() {
    local value
    value=$(python3 -c "import sys; sys.path.insert(0,'bench'); import origin; print(origin.page('/v', $SIZE).decode().replace('\"','').replace('\n',' '))")
    printf '{"value": "%s", "duration": "1h"}' "$value" >"$work/body.json"
    cat >"$work/rest-get.lua" <<LUA
math.randomseed(7)
request = function() return formatted("GET", "/cache/bench/" .. math.random(0, $KEYS - 1)) end
LUA
    cat >"$work/rest-post.lua" <<LUA
math.randomseed(9)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/body.json"); wrk.body = f:read("*a"); f:close()
request = function() return formatted(nil, "/cache/bench/" .. math.random(0, $KEYS - 1)) end
LUA
    # Writes of keys never seen and reads of absent ones: each is a LevelDB
    # miss, which the store confirms with an iterator (README, "Exact reads").
    sed -e 's|"/cache/bench/" .. math.random(0, $KEYS - 1)|"/cache/new/" .. math.random(0, 1000000000)|' \
        "$work/rest-post.lua" >"$work/rest-post-new.lua"
    sed -e 's|"/cache/bench/" .. math.random(0, $KEYS - 1)|"/cache/absent/" .. math.random(0, 1000000000)|' \
        "$work/rest-get.lua" >"$work/rest-get-miss.lua"
}

scenario_rest() {
    echo "== REST API: $SIZE-byte JSON values over $KEYS keys, wrk -t1 -c$CONNS -d$DURATION"
    local api proxy
    api=$(free_port); proxy=$(free_port)
    start_bigcache rest "$api" "$proxy" 9
    rest_scripts
    for i in $(seq 0 $((KEYS - 1))); do
        curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary "@$work/body.json" "http://127.0.0.1:$api/cache/bench/$i"
    done
    header
    row "bigcache get" "$work/rest-get.lua" "http://127.0.0.1:$api" "$(cat "$work/rest.pid")" -
    row "bigcache get absent" "$work/rest-get-miss.lua" "http://127.0.0.1:$api" "$(cat "$work/rest.pid")" -
    row "bigcache post" "$work/rest-post.lua" "http://127.0.0.1:$api" "$(cat "$work/rest.pid")" -
    row "bigcache post new" "$work/rest-post-new.lua" "http://127.0.0.1:$api" "$(cat "$work/rest.pid")" -
    if [ -n "${BASELINE_BIN:-}" ]; then
        kill "$(cat "$work/rest.pid")"
        api=$(free_port)
        start_bigcache rest-base "$api" "$(free_port)" 9 "$BASELINE_BIN"
        for i in $(seq 0 $((KEYS - 1))); do
            curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary "@$work/body.json" "http://127.0.0.1:$api/cache/bench/$i"
        done
        row "baseline get" "$work/rest-get.lua" "http://127.0.0.1:$api" "$(cat "$work/rest-base.pid")" -
        row "baseline get absent" "$work/rest-get-miss.lua" "http://127.0.0.1:$api" "$(cat "$work/rest-base.pid")" -
        row "baseline post" "$work/rest-post.lua" "http://127.0.0.1:$api" "$(cat "$work/rest-base.pid")" -
        row "baseline post new" "$work/rest-post-new.lua" "http://127.0.0.1:$api" "$(cat "$work/rest-base.pid")" -
    fi
    echo "  (the original Python server, same load on the same kind of machine: GET ~4.0-4.3k req/s, POST ~2.3-2.5k req/s)"
}

scenario_sync() {
    echo "== --sync: REST POSTs of $SIZE-byte values over $KEYS keys, wrk -t1 -c$CONNS -d$DURATION, without and with fsync per write"
    rest_scripts
    header
    local api bin label
    local bins=(target/release/bigcache) labels=(bigcache)
    [ -n "${BASELINE_BIN:-}" ] && { bins+=("$BASELINE_BIN"); labels+=(baseline); }
    for i in "${!bins[@]}"; do
        bin=${bins[$i]} label=${labels[$i]}
        for mode in nosync sync; do
            api=$(free_port)
            if [ "$mode" = sync ]; then
                start_bigcache "$label-$mode" "$api" "$(free_port)" 9 "$bin" --sync
            else
                start_bigcache "$label-$mode" "$api" "$(free_port)" 9 "$bin"
            fi
            row "$label post ($mode)" "$work/rest-post.lua" "http://127.0.0.1:$api" "$(cat "$work/$label-$mode.pid")" -
            kill "$(cat "$work/$label-$mode.pid")"
        done
    done
}

scenario_soak() {
    local minutes=${SOAK_MINUTES:-30}
    echo "== soak: $minutes minutes of hits, misses, purges and REST writes at a fixed rate"
    local o api proxy
    o=$(free_port); api=$(free_port); proxy=$(free_port)
    start_origin "$o" 0
    start_bigcache soak "$api" "$proxy" "$o"
    python3 bench/soak.py --proxy "127.0.0.1:$proxy" --api "127.0.0.1:$api" \
        --pid "$(cat "$work/soak.pid")" --minutes "$minutes"
}

scenario_cold() {
    local pages=${COLD_PAGES:-200000} rate=${WRITE_RATE:-200}
    echo "== cold hits: $pages pages of $SIZE bytes read at random, hot tier 128 MiB, writer adding $rate pages/s"
    local o b_api b_proxy n_port secs
    secs=${DURATION%s}
    o=$(free_port); b_api=$(free_port); b_proxy=$(free_port); n_port=$(free_port)
    start_origin "$o" 0
    start_bigcache cold "$b_api" "$b_proxy" "$o"
    start_nginx "$n_port" "$o"
    echo "  populating bigcache:"; python3 bench/populate.py 127.0.0.1 "$b_proxy" cold "$pages"
    echo "  populating nginx:";    python3 bench/populate.py 127.0.0.1 "$n_port" cold "$pages"
    local targets=(bigcache nginx) base_proxy=""
    if [ -n "${BASELINE_BIN:-}" ]; then
        base_proxy=$(free_port)
        start_bigcache cold-base "$(free_port)" "$base_proxy" "$o" "$BASELINE_BIN"
        echo "  populating bigcache baseline:"; python3 bench/populate.py 127.0.0.1 "$base_proxy" cold "$pages"
        targets=(baseline bigcache nginx)
    fi
    # Write back what populating dirtied, so neither server's run pays for it.
    sync; sleep 2
    echo "  raw pages: $((pages * SIZE / 1048576)) MiB; bigcache data dir: $(du -sm "$work/cold" | cut -f1) MiB; nginx cache dir: $(du -sm "$work/nginx-cache" | cut -f1) MiB"
    cat >"$work/cold.lua" <<LUA
math.randomseed(11)
request = function() return formatted("GET", "/cold/" .. math.random(0, $pages - 1)) end
LUA
    # Rounds interleaved as in "hot": the host's speed drifts within
    # minutes, the ratio within a round much less.
    local rounds=${ROUNDS:-3} r line ratios=() rps_b rps_n p999_b p999_n
    header
    for r in $(seq "$rounds"); do
        for target in "${targets[@]}"; do
            local port pid
            case $target in
                bigcache) port=$b_proxy; pid=$(cat "$work/cold.pid") ;;
                baseline) port=$base_proxy; pid=$(cat "$work/cold-base.pid") ;;
                nginx) port=$n_port; pid=$(cat "$work/nginx.pid") ;;
            esac
            taskset -c 1 python3 bench/writer.py 127.0.0.1 "$port" "$rate" "$secs" "new-$target-r$r" >"$work/writer.txt" &
            local wpid=$!
            local slow_before io_before
            slow_before=$(slow_commands cold)
            if [ -n "${DISK_COLD:-}" ]; then
                python3 bench/drop_cache.py "$work/cold" "$work/nginx-cache" "$work/cold-base"
                io_before=$(io_read "$pid")
            fi
            line=$(row "$target r$r" "$work/cold.lua" "http://127.0.0.1:$port" "$pid" "$o"); echo "$line"
            if [ -n "${DISK_COLD:-}" ]; then
                local served
                served=$(awk -v r="$(awk '{print $3}' <<<"$line")" -v s="$secs" 'BEGIN {printf "%d", r * s}')
                echo "  disk read: $(awk -v b="$(($(io_read "$pid") - io_before))" -v n="$served" 'BEGIN {printf "%.1f KiB per request", b / 1024 / n}')"
            fi
            case $target in
                bigcache) rps_b=$(awk '{print $3}' <<<"$line"); p999_b=$(awk '{print $6}' <<<"$line") ;;
                nginx) rps_n=$(awk '{print $3}' <<<"$line"); p999_n=$(awk '{print $6}' <<<"$line") ;;
            esac
            wait $wpid
            echo "  $(cat "$work/writer.txt")"
            [ $target = bigcache ] && echo "  shard commands held >= 20 ms by compaction during the run: $(($(slow_commands cold) - slow_before))"
        done
        ratios+=("$(awk -v b="$rps_b" -v n="$rps_n" -v pb="$p999_b" -v pn="$p999_n" 'BEGIN {printf "%.2f %.2f", b / n, pb / pn}')")
    done
    round_ratios "bigcache/nginx req/s" "target >= 1.0" p99.9 "target <= 2.0" "${ratios[@]}"
    echo "  (no request may take over 50 ms: see the max column)"
    [ -n "$base_proxy" ] && kill "$(cat "$work/cold-base.pid")"
    stop_nginx
}

# Replays a trace file through wrk, in order, once; prints "RESULT-TRACE
# requests hits" and the usual RESULT line.
trace_script() { # trace-file
    cat >"$work/trace.lua" <<LUA
local trace, i, seen, hits = {}, 0, 0, 0
for line in io.lines("$1") do trace[#trace + 1] = line end
request = function()
  i = i + 1
  return wrk.format("GET", "/t/" .. trace[math.min(i, #trace)])
end
response = function(status, headers, body)
  seen = seen + 1
  if seen <= #trace and (headers["x-cache"] or headers["X-Cache"]) == "HIT" then hits = hits + 1 end
  if seen == #trace then
    -- wrk runs for a duration, not a count: end here, once, at the last
    -- response of the trace (the harness times the run itself).
    io.write(string.format("RESULT-TRACE %d %d\n", #trace, hits))
    io.flush()
    os.exit(0)
  end
end
LUA
}

scenario_trace() {
    local pages=${TRACE_PAGES:-1000000} requests=${TRACE_REQUESTS:-2000000} size=${TRACE_SIZE:-4096}
    local rate=${WRITE_RATE:-200} budget cap o api proxy kind
    budget=$((pages * size / 10)); cap=$((pages / 10))
    echo "== trace: $pages incompressible pages of $size bytes, $requests Zipf(0.9) requests; --max-disk $((budget / 1048576)) MiB (10% of the pages' bytes, $cap pages)"
    o=$(free_port)
    python3 bench/origin.py --port "$o" --size "$size" --noise &
    pids+=($!)
    wait_http "http://127.0.0.1:$o/__count"
    printf "%-6s %9s %9s %9s %9s %9s %10s %10s %10s %8s\n" trace requests distinct bigcache LRU FIFO max-disk-MiB evictions reinserted req/s
    for kind in ${TRACE_KINDS:-zipf scan}; do
        python3 bench/trace.py gen "$pages" "$requests" "$kind" "$work/$kind.trace"
        local n distinct lru fifo
        read -r n distinct lru fifo <<<"$(python3 bench/trace.py sim "$work/$kind.trace" "$cap")"
        api=$(free_port); proxy=$(free_port)
        start_bigcache "trace-$kind" "$api" "$proxy" "$o" "${TRACE_BIN:-target/release/bigcache}" --max-disk "$budget"
        trace_script "$work/$kind.trace"
        local t0 most=0 now
        t0=$(date +%s%N)
        taskset -c 1 wrk -t1 -c8 -d3600s --timeout 30s -s "$work/trace.lua" "http://127.0.0.1:$proxy" >"$work/wrk.txt" &
        local wrk_pid=$!
        while kill -0 "$wrk_pid" 2>/dev/null; do
            # Files come and go under du: a vanished one is not an error.
            now=$({ du -sb "$work/trace-$kind" 2>/dev/null || true; } | cut -f1)
            now=${now:-0}
            [ "$now" -gt "$most" ] && most=$now
            sleep 1
        done
        local hits rps stat
        read -r _ _ hits <<<"$(grep '^RESULT-TRACE' "$work/wrk.txt")"
        rps=$(( n * 1000000000 / ($(date +%s%N) - t0) ))
        stat=$(curl -s "http://127.0.0.1:$api/stat")
        printf "%-6s %9s %9s %9s %9s %9s %10s %10s %10s %8s\n" "$kind" "$n" "$distinct" \
            "$(awk "BEGIN {printf \"%.4f\", $hits / $n}")" "$lru" "$fifo" "$((most / 1048576))" \
            "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["disk"]["evictions"])' <<<"$stat")" \
            "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["disk"]["reinsertions"])' <<<"$stat")" "$rps"
        if [ "$kind" = zipf ]; then
            # Hits under eviction: the most popular 1% of pages (more than
            # the hot tier holds) read at random while a writer adds new
            # pages (each one evicts).
            python3 bench/trace.py top "$pages" $((pages / 100)) "$work/top.txt"
            cat >"$work/top.lua" <<LUA
local top = {}
for line in io.lines("$work/top.txt") do top[#top + 1] = line end
math.randomseed(17)
request = function() return formatted("GET", "/t/" .. top[math.random(1, #top)]) end
LUA
            echo "  hits on the top 1%: alone, then while a writer adds $rate pages/s (each evicts):"
            header
            row "bigcache, no writer" "$work/top.lua" "http://127.0.0.1:$proxy" "$(cat "$work/trace-$kind.pid")" -
            taskset -c 1 python3 bench/writer.py 127.0.0.1 "$proxy" "$rate" "${DURATION%s}" "new" >"$work/writer.txt" &
            local wpid=$! before ev0
            before=$(wc -l <"$work/trace-$kind.log")
            ev0=$(curl -s "http://127.0.0.1:$api/stat" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["disk"]["evictions"], d["proxy"]["hit"], d["proxy"]["miss"])')
            row "bigcache" "$work/top.lua" "http://127.0.0.1:$proxy" "$(cat "$work/trace-$kind.pid")" -
            wait $wpid
            echo "  $(cat "$work/writer.txt")"
            curl -s "http://127.0.0.1:$api/stat" | python3 -c '
import json, sys
d = json.load(sys.stdin)
e0, h0, m0 = map(int, sys.argv[1:])
ev = d["disk"]["evictions"] - e0
h, m = d["proxy"]["hit"] - h0, d["proxy"]["miss"] - m0
print("  during it: %d evictions; %d hits, %d misses (the new pages among them)" % (ev, h, m))' $ev0
            echo "  shard commands held >= 20 ms during it:" \
                "$(tail -n +$((before + 1)) "$work/trace-$kind.log" | grep -ao 'command="[a-z-]*"' | sort | uniq -c | tr -s ' \n' ' ')"
            echo "  ... and during the whole trace: $(grep -ao 'command="[a-z-]*"' "$work/trace-$kind.log" | sort | uniq -c | tr -s ' \n' ' ')"
            echo "  live entries at the end: $(curl -s "http://127.0.0.1:$api/stat/count")"
            printf "%-6s %9s %9s %9s %9s %9s %10s %10s %10s %8s\n" trace requests distinct bigcache LRU FIFO max-disk-MiB evictions reinserted req/s
        fi
        local bpid
        bpid=$(cat "$work/trace-$kind.pid")
        kill "$bpid"
        while kill -0 "$bpid" 2>/dev/null; do sleep 0.1; done
        rm -rf "$work/trace-$kind"
    done
    echo "  (max-disk-MiB: the most the data directory took, sampled each second; the budget is $((budget / 1048576)) MiB plus one blob file of $((budget / 4 / 16 / 1048576)) MiB)"
}

scenario_scale() {
    local sizes=${SCALE_PAGES:-"10000 100000 1000000"} o api proxy have=0 pid
    echo "== scale: bigcache grown to each size (pages of $SIZE bytes, hot tier 128 MiB); target RSS <= 64 MB + 128 MiB = 198 MB"
    o=$(free_port); api=$(free_port); proxy=$(free_port)
    start_origin "$o" 0
    start_bigcache scale "$api" "$proxy" "$o"
    printf "%-9s %10s %10s %9s %9s %9s %8s %11s %9s %9s\n" pages RSS-full RSS-reads disk-MiB raw-MiB disk/raw req/s startup-ms dir-B/ent dir-ready
    for n in $sizes; do
        python3 bench/populate.py 127.0.0.1 "$proxy" scale "$n" 16 "$have" >"$work/populate.txt"
        have=$n
        sync
        pid=$(cat "$work/scale.pid")
        local full reads out rps disk raw startup t0
        full=$(($(rss_kib "$pid") / 1024))
        # The directory's RAM per stored entry (slots over entries).
        local per
        per=$(metric "$api" bigcache_store_directory_bytes bigcache_store_directory_entries)
        cat >"$work/scale.lua" <<LUA
math.randomseed(13)
request = function() return formatted("GET", "/scale/" .. math.random(0, $n - 1)) end
LUA
        cat "$work/scale.lua" "$work/report.lua" >"$work/run.lua"
        out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -s "$work/run.lua" "http://127.0.0.1:$proxy" | grep '^RESULT')
        read -r _ rps _ <<<"$out"
        reads=$(($(rss_kib "$pid") / 1024))
        disk=$(du -sm "$work/scale" | cut -f1)
        raw=$((n * SIZE / 1048576))
        # Restart: SIGTERM, wait for the exit, time a fresh start to its
        # first hit on a page stored before the restart.
        kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        t0=$(date +%s%N)
        launch_bigcache scale "$api" "$proxy" "$o"
        startup=$(python3 bench/first_hit.py "http://127.0.0.1:$proxy/scale/$((n / 2))" "$t0")
        # Until the directory is built, lookups go to LevelDB as before it
        # existed; the time from the restart until every shard's is.
        local ready=""
        while [ "$(metric "$api" bigcache_store_directory_ready_shards)" != "$(metric "$api" bigcache_store_shards)" ]; do
            sleep 0.05
        done
        ready=$((($(date +%s%N) - t0) / 1000000))
        printf "%-9s %10s %10s %9s %9s %9s %8s %11s %9s %9s\n" "$n" "${full}MB" "${reads}MB" "$disk" "$raw" \
            "$(awk "BEGIN {printf \"%.2f\", $disk / $raw}")" "$rps" "$startup" "$per" "${ready}ms"
    done
    echo "  (nginx's cache loader walks its cache directory after a restart: about a minute for 1M pages, per the issue)"
}

# An nginx proxy_cache (bench/nginx.conf) of its own, named $1, on port
# $2 in front of the origin on $3, with $4 added to its location.
start_nginx_as() { # name port origin directives
    local d=$work/$1
    mkdir -p "$d/cache" "$d/tmp"
    sed -e "s|@WORK@/nginx.pid|$d/nginx.pid|" -e "s|@WORK@/nginx-cache|$d/cache|" \
        -e "s|@WORK@/nginx-tmp|$d/tmp|g" -e "s|@WORK@/nginx-error.log|$d/error.log|" \
        -e "s|@PORT@|$2|g" -e "s|@ORIGIN@|$3|g" \
        -e "s|add_header X-Cache \$upstream_cache_status;|add_header X-Cache \$upstream_cache_status; $4|" \
        bench/nginx.conf >"$d/nginx.conf"
    taskset -c 0 nginx -c "$d/nginx.conf" -p "$d"
    wait_http "http://127.0.0.1:$2/__count"
}

# Hits to browsers, each server keeping pages as its users configure it
# (issue 33): see the scenario list at the top.
scenario_browser() {
    local pages=${BROWSER_PAGES:-10000} rounds=${ROUNDS:-3}
    local ae="gzip, deflate, br, zstd"
    echo "== browser hits: Accept-Encoding: $ae; cold: $pages pages of $SIZE bytes at random, hot: $KEYS; $rounds interleaved rounds"
    local o og b_cold b_hot api_cold api_hot n1 n2
    o=$(free_port); og=$(free_port)
    b_cold=$(free_port); b_hot=$(free_port); api_cold=$(free_port); api_hot=$(free_port)
    n1=$(free_port); n2=$(free_port)
    start_origin "$o" 0 1
    taskset -c 1 python3 bench/origin.py --port "$og" --size "$SIZE" --gzip &
    pids+=($!)
    wait_http "http://127.0.0.1:$og/__count"
    start_bigcache br-cold "$api_cold" "$b_cold" "$o" target/release/bigcache --hot-cache-size 0
    start_bigcache br-hot "$api_hot" "$b_hot" "$o"
    start_nginx_as gzip1 "$n1" "$o" "gzip on; gzip_comp_level 1; gzip_vary on;"
    start_nginx_as django-gzip "$n2" "$og" ""
    # Misses at a pace a Django farm could render them (BROWSER_RATE, 400
    # pages/s, more than 600 workers at 1.5 s a page), which the encoder
    # keeps up with on the CPU the server leaves idle; a burst beyond it is
    # stored as sent and encoded at later hits (see the counts below).
    local pace=${BROWSER_RATE:-400}
    echo "  populating bigcache (cold), $pace pages/s:"
    POPULATE_AE="$ae" POPULATE_RATE=$pace python3 bench/populate.py 127.0.0.1 "$b_cold" cold "$pages" 4
    echo "  populating bigcache (hot), $pace pages/s:"
    POPULATE_AE="$ae" POPULATE_RATE=$pace python3 bench/populate.py 127.0.0.1 "$b_hot" page "$KEYS" 4
    # One read of every page at the same pace: a page the encoder could
    # not take during the burst is encoded at its next hit.
    echo "  reading bigcache's pages once:"
    POPULATE_AE="$ae" POPULATE_RATE=$pace python3 bench/populate.py 127.0.0.1 "$b_cold" cold "$pages" 4
    POPULATE_AE="$ae" POPULATE_RATE=$pace python3 bench/populate.py 127.0.0.1 "$b_hot" page "$KEYS" 4
    local port
    for port in "$n1" "$n2"; do
        echo "  populating nginx on $port:"
        POPULATE_AE="$ae" python3 bench/populate.py 127.0.0.1 "$port" cold "$pages"
        POPULATE_AE="$ae" python3 bench/populate.py 127.0.0.1 "$port" page "$KEYS"
    done
    local api
    for api in "$api_cold" "$api_hot"; do
        # The encoder finishes what populating queued: its counts settle.
        local last="" now i
        for i in $(seq 60); do
            now=$(packed "$api")
            [ "$now" = "$last" ] && break
            last=$now
            sleep 1
        done
        echo "  bigcache on $api, text pages stored: $now"
    done
    sync; sleep 2
    echo "  data: bigcache (cold) $(du -sm "$work/br-cold" | cut -f1) MiB, nginx gzip on $(du -sm "$work/gzip1/cache" | cut -f1) MiB, nginx caching gzip $(du -sm "$work/django-gzip/cache" | cut -f1) MiB, raw $(((pages + KEYS) * SIZE / 1048576)) MiB"
    local name url
    for name in "bigcache:$b_cold" "nginx-gzip1:$n1" "nginx-django-gzip:$n2"; do
        url="http://127.0.0.1:${name#*:}/cold/7"
        echo "  ${name%%:*}: $(curl -s -o /dev/null -w '%{size_download}' -H "Accept-Encoding: $ae" "$url") bytes per hit ($(curl -s -o /dev/null -D - -H "Accept-Encoding: $ae" "$url" | tr -d '\r' | awk -F': ' 'tolower($1) == "content-encoding" {print $2}'))"
    done
    local kind
    for kind in cold page; do
        local n=$pages
        [ $kind = page ] && n=$KEYS
        cat >"$work/browser-$kind.lua" <<LUA
math.randomseed(7)
local browser = {
  ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
  ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
  ["Accept-Language"] = "en-US,en;q=0.5",
  ["Accept-Encoding"] = "$ae",
  ["Cookie"] = "_ga=GA1.1.1234567890.1700000000; _gid=GA1.1.987654321.1700000000",
  ["Upgrade-Insecure-Requests"] = "1",
}
request = function() return formatted("GET", "/$kind/" .. math.random(0, $n - 1), browser) end
LUA
    done
    header
    local r line b g d cold=() hot=()
    for r in $(seq "$rounds"); do
        for kind in cold page; do
            local bport=$b_cold bpid
            bpid=$(cat "$work/br-cold.pid")
            [ $kind = page ] && { bport=$b_hot; bpid=$(cat "$work/br-hot.pid"); }
            line=$(row "bigcache-$kind r$r" "$work/browser-$kind.lua" "http://127.0.0.1:$bport" "$bpid" "$o"); echo "$line"
            b=$(awk '{print $3}' <<<"$line")
            line=$(row "nginx-gzip1-$kind r$r" "$work/browser-$kind.lua" "http://127.0.0.1:$n1" "$(cat "$work/gzip1/nginx.pid")" "$o"); echo "$line"
            g=$(awk '{print $3}' <<<"$line")
            line=$(row "nginx-djgzip-$kind r$r" "$work/browser-$kind.lua" "http://127.0.0.1:$n2" "$(cat "$work/django-gzip/nginx.pid")" "$og"); echo "$line"
            d=$(awk '{print $3}' <<<"$line")
            local ratio
            ratio=$(awk -v b="$b" -v g="$g" -v d="$d" 'BEGIN {m = g > d ? g : d; printf "%.2f", b / m}')
            if [ $kind = cold ]; then cold+=("$ratio -"); else hot+=("$ratio -"); fi
        done
    done
    echo "  bigcache / the better nginx row:"
    round_ratios cold "target >= 1.3" - - "${cold[@]}"
    round_ratios hot "target >= 1.5" - - "${hot[@]}"
    kill "$(cat "$work/gzip1/nginx.pid")" "$(cat "$work/django-gzip/nginx.pid")"
}

# The codings a stored text page could be kept in (issue 33), measured on
# the HTML, CSS and JS of Debian's python3-doc and on the origin's pages:
# bytes against identity, compression and decompression speed on one core.
scenario_codings() {
    echo "== codings: stored bytes and single-core speed per coding"
    cargo build --release --example codings -q
    local docs=$work/pydoc
    mkdir -p "$docs"
    (cd "$work" && apt-get download -qq python3.11-doc >/dev/null 2>&1) || {
        apt-get update -qq && (cd "$work" && apt-get download -qq python3.11-doc >/dev/null)
    }
    dpkg-deb -x "$work"/python3.11-doc_*.deb "$docs"
    echo "  python3-doc:"
    taskset -c 0 target/release/examples/codings "$docs/usr/share/doc/python3.11/html" | sed 's/^/  /'
    mkdir -p "$work/pages"
    python3 -c "
import sys; sys.path.insert(0, 'bench'); import origin
for i in range(1000):
    open('$work/pages/%d.html' % i, 'wb').write(origin.page('/page/%d' % i, $SIZE))
"
    echo "  the origin's pages:"
    taskset -c 0 target/release/examples/codings "$work/pages" | sed 's/^/  /'
}

for s in "${scenarios[@]}"; do
    "scenario_$s"
    echo
done
