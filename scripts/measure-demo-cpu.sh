#!/usr/bin/env bash
# Measures the CPU the demo node uses (steadycast + its ffmpeg children: the test pattern and
# both pipelines) over a window, while one HLS viewer follows the live edge.
# Usage: scripts/measure-demo-cpu.sh [seconds]   (after `cargo build --release`)
set -euo pipefail
window=${1:-60}
dir=$(mktemp -d)
port=${PORT:-18480}
./target/release/steadycast demo --listen 127.0.0.1:$port --data-dir "$dir" \
    --rtmp-listen 127.0.0.1:$((port + 1)) --srt-listen 127.0.0.1:$((port + 2)) >/dev/null 2>"$dir/log" &
node=$!
trap 'kill $node 2>/dev/null; wait $node 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 60); do
    # Wait for a listed segment: the viewer must find media to play.
    playlist=$(curl -sf "http://127.0.0.1:$port/live/demo/360p.m3u8" || true)
    case "$playlist" in *.m4s*) break ;; esac
    sleep 1
done
ffmpeg -loglevel error -i "http://127.0.0.1:$port/live/demo/main.m3u8" -map 0 -c copy -f null - &
viewer=$!
sleep 10
ticks() { # utime+stime of the node and its children, in clock ticks
    local total=0
    for pid in $node $(pgrep -P $node); do
        read -r -a f <"/proc/$pid/stat" || continue
        total=$((total + f[13] + f[14]))
    done
    echo $total
}
t0=$(ticks); sleep "$window"; t1=$(ticks)
kill $viewer 2>/dev/null || true
hz=$(getconf CLK_TCK)
awk -v d=$((t1 - t0)) -v hz="$hz" -v w="$window" -v n="$(nproc)" 'BEGIN {
    c = d / hz / w * 100
    printf "demo node CPU over %d s: %.0f%% of one core (%.0f%% of this %d-core machine)\n", w, c, c / n, n
}'
