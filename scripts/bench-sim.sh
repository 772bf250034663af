#!/bin/sh
# Measures the simulator's overhead: GET /version over HTTPS on loopback through the real
# client, sequential and with 16 concurrent requests. BENCH_REQUESTS=N changes the count.
set -eu
cd "$(dirname "$0")/.."
exec cargo test --release --test it -- --ignored --nocapture \
    pve_client::simulator::bench_simulator_version_requests_per_second
