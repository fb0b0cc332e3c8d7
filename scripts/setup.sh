#!/usr/bin/env bash
# Installs what steadycast needs on Debian/Ubuntu when it is missing, with apt-get. Idempotent.
#   scripts/setup.sh            ffmpeg (libx264, AAC, libsrt) and the font of the test pattern
#   scripts/setup.sh --browser  also headless Chromium and chromedriver, for the browser test
set -euo pipefail

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || need+=(fonts-dejavu-core)
if [ "${1:-}" = "--browser" ]; then
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi

if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "steadycast: please install: ${need[*]} (no apt-get on this machine)" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "steadycast: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "steadycast: cargo not found; install Rust 1.95 or newer (https://rustup.rs)" >&2
    exit 1
fi
