#!/usr/bin/env bash
# `make cluster`: a whole steadycast cluster on loopback, for a person to try: PostgreSQL, a
# three-node Garage (replication factor 3), three steadycast nodes with mixed roles, HAProxy
# and the nginx shield (the configurations in ops/), running the demo channel. It prints the
# viewer URLs and the node list, and stops everything it started on Ctrl-C.
#
# Kill any one process (a steadycast node, a Garage node, an ffmpeg) and keep watching.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/steadycast
garage=${STEADYCAST_GARAGE:-$HOME/.cache/steadycast/garage/bin/garage}
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
root=$(mktemp -d /tmp/steadycast-cluster.XXXXXX)
chmod 755 "$root" # PostgreSQL runs as its own account
pids=()
garage_pids=()

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop() {
    trap - EXIT INT TERM
    echo "stopping the cluster (files kept in $root)" >&2
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # The server runs under runuser, which a signal to the job does not reach.
    [ -d "$root/pg/data" ] && as_postgres "$pgbin/pg_ctl" -D "$root/pg/data" -m fast stop \
        >/dev/null 2>&1 || true
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

# Runs a command again a second after it exits, as systemd's Restart=always does: a node
# killed by hand (or by `steadycast chaos`) comes back. Stopped, it stops its command.
supervise() {
    local child=
    trap 'kill $child 2>/dev/null; exit 0' INT TERM
    while true; do
        "$@" &
        child=$!
        wait "$child" || true
        sleep 1
    done
}

wait_port() {
    for _ in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    echo "nothing listens on port $1 ($2); see $root" >&2
    exit 1
}


# PostgreSQL: the catalog, leases and notifications.
mkdir -p "$root/pg"
[ "$(id -u)" -ne 0 ] || chown postgres: "$root/pg"
as_postgres "$pgbin/initdb" -U steadycast -A trust -E UTF8 --no-sync -D "$root/pg/data" >/dev/null
as_postgres "$pgbin/postgres" -D "$root/pg/data" -h 127.0.0.1 -p 55432 -k "$root/pg" \
    >"$root/pg/server.log" 2>&1 &
pids+=($!)
wait_port 55432 PostgreSQL
catalog="postgres://steadycast@127.0.0.1:55432/postgres"

# Garage: three nodes in three zones, every object on all three.
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
for i in 1 2 3; do
    dir="$root/garage$i"
    mkdir -p "$dir"
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:3${i}901"
rpc_public_addr = "127.0.0.1:3${i}901"
rpc_secret = "$secret"
# A killed peer is otherwise waited on until the next status exchange (up to 10 s).
rpc_timeout_msec = 1000
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:3${i}900"
[admin]
api_bind_addr = "127.0.0.1:3${i}903"
EOF
    RUST_LOG=warn "$garage" -c "$dir/garage.toml" server >"$dir/server.log" 2>&1 &
    pids+=($!)
    garage_pids+=($!)
done
for i in 1 2 3; do wait_port "3${i}900" "Garage $i"; done
g() { "$garage" -c "$root/garage1/garage.toml" "$@"; }
for i in 1 2 3; do
    id=$("$garage" -c "$root/garage$i/garage.toml" node id -q | cut -d@ -f1)
    g node connect "$id@127.0.0.1:3${i}901" >/dev/null
    g layout assign -z "zone$i" -c 1G "$id" >/dev/null
done
g layout apply --version 1 >/dev/null
key_id="GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
key_secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# What the nodes authenticate segment deliveries and input relays with.
cluster_secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The API's admin token, the same on every node (in the environment, not in their files).
STEADYCAST_TOKEN="sct_$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export STEADYCAST_TOKEN
export STEADYCAST_ADMIN_TOKEN="$STEADYCAST_TOKEN"
g bucket create steadycast >/dev/null
g key import --yes "$key_id" "$key_secret" >/dev/null
g bucket allow --read --write --owner steadycast --key "$key_id" >/dev/null

# steadycast: three nodes, each on its zone's Garage node.
cat >"$root/demo.toml" <<'EOF'
[[channels]]
id = "demo"
frame_rate = "30"
segment_seconds = 2.0
preset = "veryfast"
live_window_seconds = 60
ladder = [
  { name = "360p", width = 640, height = 360, bitrate_kbps = 800 },
  { name = "180p", width = 320, height = 180, bitrate_kbps = 300 },
]
[channels.inputs.main]
type = "rtmp"
stream_key = "demo-key"
EOF
roles=("ingest,pipeline,packager,origin,api" "ingest,pipeline,packager,origin,api" "pipeline,origin,api")
for i in 1 2 3; do
    dir="$root/node$i"
    mkdir -p "$dir"
    {
        echo "[server]"
        echo "listen = \"127.0.0.1:808$i\""
        echo "data_dir = \"$dir\""
        echo "rtmp_listen = \"127.0.0.1:193$i\""
        echo "srt_listen = \"127.0.0.1:900$i\""
        echo "catalog = \"$catalog\""
        echo "cluster_secret = \"$cluster_secret\""
        echo "node_id = \"node$i\""
        echo "roles = [\"${roles[$((i - 1))]//,/\", \"}\"]"
        echo "blobs = { type = \"s3\", bucket = \"steadycast\", endpoint = \"http://127.0.0.1:3${i}900\", region = \"garage\", access_key_id = \"$key_id\", secret_access_key = \"$key_secret\" }"
        [ "$i" -eq 1 ] && cat "$root/demo.toml"
    } >"$dir/steadycast.toml"
    supervise "$bin" serve --config "$dir/steadycast.toml" >>"$dir/stdout.log" 2>>"$dir/node.log" &
    pids+=($!)
    wait_port "808$i" "steadycast node$i"
done

# The publisher: a test pattern pushed to both ingest nodes (node1 and node2), as an encoder
# pushes to a managed service's two input addresses. node3 has no ingest role: a pipeline
# placed there relays the input from an ingest node.
for i in 1 2; do
    supervise ffmpeg -hide_banner -nostats -loglevel error -re \
        -f lavfi -i "testsrc2=size=640x360:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
        -c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -b:a 96k \
        -f flv "rtmp://127.0.0.1:193$i/live/demo-key" >"$root/publisher$i.log" 2>&1 &
    pids+=($!)
done

# HAProxy over the three origins, and the nginx shield in front of it: the shipped configs
# with their BEGIN/END blocks filled in.
fill() { # file block replacement...
    awk -v block="$2" -v lines="$3" '
        $0 ~ "# BEGIN " block "$" { print lines; skip = 1; next }
        $0 ~ "# END " block "$" { skip = 0; next }
        !skip' "$1"
}
origins=$(printf '    server node%s 127.0.0.1:808%s check\\n' 1 1 2 2 3 3)
fill ops/haproxy/steadycast.cfg bind "    bind 127.0.0.1:8090" >"$root/haproxy.tmp"
fill "$root/haproxy.tmp" origins "$origins" >"$root/haproxy.cfg"
/usr/sbin/haproxy -db -f "$root/haproxy.cfg" >"$root/haproxy.log" 2>&1 &
pids+=($!)
mkdir -p "$root/shield"
fill ops/nginx/steadycast-shield.conf upstream "        server 127.0.0.1:8090;" >"$root/nginx.tmp"
fill "$root/nginx.tmp" listen "        listen 127.0.0.1:8088;" >"$root/shield/shield.conf"
/usr/sbin/nginx -p "$root/shield" -c "$root/shield/shield.conf" -g "daemon off;" \
    >"$root/shield/stdout.log" 2>&1 &
pids+=($!)
wait_port 8090 HAProxy
wait_port 8088 nginx

for _ in $(seq 1 120); do
    curl -fs -o /dev/null http://127.0.0.1:8090/live/demo/main.m3u8 && break
    sleep 1
done
cat <<EOF

steadycast cluster on loopback (files and logs in $root)
  through HAProxy:     http://127.0.0.1:8090/live/demo/main.m3u8   (DASH: .../manifest.mpd)
  through the shield:  http://127.0.0.1:8088/live/demo/main.m3u8
  dashboard:           http://127.0.0.1:8081/?channel=demo#token=$STEADYCAST_TOKEN
  API token:           export STEADYCAST_TOKEN=$STEADYCAST_TOKEN
  nodes:               $bin node list --api http://127.0.0.1:8081
  watch as a viewer:   $bin verify http://127.0.0.1:8090/live/demo/main.m3u8 --seconds 60

EOF
"$bin" node list --api http://127.0.0.1:8081
if [ "$(id -u)" -eq 0 ]; then restart_pg="runuser -u postgres -- "; else restart_pg=""; fi
restart_pg+="$pgbin/pg_ctl -D $root/pg/data -l $root/pg/server.log -w restart -m fast"
chaos="$bin chaos --node http://127.0.0.1:8081 --watch http://127.0.0.1:8090/live/demo/main.m3u8"
cat <<EOF

Try any single fault; the channel keeps playing, and a killed node comes back a second later.
steadycast chaos injects one while verify watches through HAProxy, and prints the verdict:
  $chaos --scenario kill-lease-holder
  (also freeze-lease-holder, kill-origin, kill-ingest, drain-lease-holder)
  $chaos --scenario kill-store-node --pid ${garage_pids[2]}
  $chaos --scenario restart-catalog --command "$restart_pg"
Ctrl-C stops everything.
EOF
wait
