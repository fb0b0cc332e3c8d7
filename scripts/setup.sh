#!/usr/bin/env bash
# Installs what steadycast needs on Debian/Ubuntu when it is missing, with apt-get. Idempotent.
#   scripts/setup.sh             ffmpeg (libx264, AAC, libsrt) and the font of the test pattern
#   scripts/setup.sh --browser   also headless Chromium and chromedriver, for the browser test
#   scripts/setup.sh --services  also the servers the backend tests start on loopback:
#                                PostgreSQL, HAProxy, nginx and curl (Debian's) and Garage, the
#                                S3-compatible store
#                                (built once with cargo into ~/.cache/steadycast/garage:
#                                about 11 minutes on 2 cores)
set -euo pipefail

browser=false
services=false
for arg in "$@"; do
    case "$arg" in
        --browser) browser=true ;;
        --services) services=true ;;
        *) echo "steadycast: unknown option $arg" >&2; exit 2 ;;
    esac
done

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || need+=(fonts-dejavu-core)
if $browser; then
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
if $services; then
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
    [ -x /usr/sbin/haproxy ] || need+=(haproxy)
    [ -x /usr/sbin/nginx ] || need+=(nginx)
    # The HTTPS test asks curl for HTTP/2.
    command -v curl >/dev/null 2>&1 || need+=(curl)
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

# Garage is AGPL: it only ever runs beside the tests as a separate binary, never linked.
GARAGE_VERSION=2.5.0
garage_root="${HOME}/.cache/steadycast/garage"
if $services && [ -z "${STEADYCAST_GARAGE:-}" ] \
    && ! "$garage_root/bin/garage" --version 2>/dev/null | grep -q "[:v]$GARAGE_VERSION\b"; then
    echo "steadycast: building Garage $GARAGE_VERSION into $garage_root (once)" >&2
    cargo install garage --version "$GARAGE_VERSION" --locked --quiet --root "$garage_root"
fi
