#!/usr/bin/env bash
# Connection flood at the cap (BENCHMARKS.md): `fluxadmit serve` with --max-connections 1000
# on 127.0.0.1, a flood of silent connections, and two well-behaved clients, for 20 s; then
# the limits the server counted and its RSS. With ALL=1, also 200 slow-loris clients and 8
# connections posting mangled reviews at the same time.
#   [ALL=1] bench/flood/run.sh [BINARY]      (default target/release/fluxadmit)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(realpath "${1:-$here/../../target/release/fluxadmit}")"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 20000
cd "$work"
"$bin" serve --addr 127.0.0.1:18443 --metrics-addr 127.0.0.1:19090 --cert-dir certs \
    --policies "$here/team.yaml" --max-connections 1000 --drain 0s --log-level warn 2>server.err &
pid=$!
for _ in $(seq 100); do
    [ -f certs/ca.crt ] && curl -s --cacert certs/ca.crt https://localhost:18443/healthz >/dev/null && break
    sleep 0.2
done
python3 "$here/flood.py" 18443 certs/ca.crt keep 20 >keep.out &
k=$!
python3 "$here/flood.py" 18443 certs/ca.crt flood 24 >flood.out &
f=$!
if [ "${ALL:-}" = 1 ]; then
    python3 "$here/flood.py" 18443 certs/ca.crt loris 24 >loris.out &
    l=$!
    python3 "$here/flood.py" 18443 certs/ca.crt garbage 24 >garbage.out &
    g=$!
fi
python3 "$here/flood.py" 18443 certs/ca.crt new 20
wait "$k" "$f" ${l:-} ${g:-}
cat keep.out flood.out
[ "${ALL:-}" = 1 ] && cat loris.out garbage.out
curl -s 127.0.0.1:19090/metrics | grep '^fluxadmit_limits_tripped_total' | grep -v ' 0$' || true
echo "rss: $(grep VmRSS /proc/$pid/status)"
echo "cpu seconds (user+system): $(awk '{printf "%.1f", ($14+$15)/100}' /proc/$pid/stat)"
