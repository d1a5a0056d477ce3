#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md on this machine:
#  1. issuance: raw x509.CreateCertificate vs Sigil's issuance path, one run
#  2. OCSP from the pre-signed cache, over HTTP, with wrk
#  3. `sigil dev` start-up until /healthz answers 200 (fresh and reused dir)
#  4. the Workload API: cached fetch latency, fresh SVIDs/s, entry-to-stream,
#     10,000 open streams
#  5. ACME orders with the lego v5 library (its API client and its Obtain)
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_ENABLED=1
out=${BENCH_OUT:-/dev/stdout}
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3)" >"$out"

echo "## issuance (go test -bench)" >>"$out"
go test -run '^$' -bench 'BenchmarkRawCreateCertificate|BenchmarkIssue' -benchtime 3s ./ca ./server | grep -E '^Benchmark|^ok' >>"$out"

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
go build -o bin/sigil ./cmd/sigil
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

wait_ok() { for _ in $(seq 1 400); do curl -fs -o /dev/null "$1/healthz" && return 0; sleep 0.005; done; return 1; }
echo "## sigil dev ready (process start -> /healthz 200)" >>"$out"
for run in fresh reused; do
  t0=$(date +%s.%N)
  ./bin/sigil dev --data-dir "$dir/dev" --https 127.0.0.1:18443 --http 127.0.0.1:18080 >"$dir/dev.log" 2>&1 & pid=$!
  wait_ok http://127.0.0.1:18080
  t1=$(date +%s.%N)
  echo "dev ready ($run data dir): $(echo "$t1 - $t0" | bc) s" >>"$out"
  [ "$run" = reused ] || { kill $pid; wait $pid || true; }
done

export SIGIL_ADDR=https://127.0.0.1:18443 SIGIL_CACERT=$dir/dev/root.pem SIGIL_CLIENT_CERT=$dir/dev/operator.pem SIGIL_CLIENT_KEY=$dir/dev/operator-key.pem
./bin/sigil ca issue --spiffe-id spiffe://sigil.test/bench --out-dir "$dir/leaf" >/dev/null
openssl ocsp -issuer "$dir/leaf/chain.pem" -cert "$dir/leaf/cert.pem" -no_nonce -reqout "$dir/req.der" >/dev/null
req=$(base64 -w0 "$dir/req.der")
curl -fs -o /dev/null "http://127.0.0.1:18080/ocsp/$req"   # warm the cache: the one signature
echo "## OCSP GET from cache: wrk -t1 -c32 -d10s (wrk shares the 2 cores)" >>"$out"
wrk -t1 -c32 -d10s "http://127.0.0.1:18080/ocsp/$req" | grep -E 'Requests/sec|Latency|requests in' >>"$out"

echo "## transparency log appends (SQLite and PostgreSQL)" >>"$out"
go test -run '^$' -bench 'BenchmarkAppend$' -benchtime 20000x ./tlog | grep -E '^Benchmark' >>"$out"

echo "## proofs at 1M entries (10M with SIGIL_BENCH_BIG=1)" >>"$out"
go test -run '^$' -bench 'BenchmarkProofs' -benchtime 2s -timeout 30m ./tlog | grep -E '^Benchmark' >>"$out"

echo "## Workload API (go-spiffe client, same process as the server)" >>"$out"
go test -run '^$' -bench 'BenchmarkWorkloadFetchCached' -benchtime 5000x -count 3 ./server | grep -E '^Benchmark' >>"$out"
go test -run '^$' -bench 'BenchmarkWorkloadMintFresh' -benchtime 8x -count 3 ./server | grep -E '^Benchmark' >>"$out"
go test -run '^$' -bench 'BenchmarkEntryToStream' -benchtime 50x -count 3 ./server | grep -E '^Benchmark' >>"$out"
go test -run '^$' -bench 'BenchmarkOpenStreams' -benchtime 1x -count 3 ./server | grep -E '^Benchmark' >>"$out"

echo "## ACME orders, 16 accounts: lego's API client, then lego's own Obtain flow" >>"$out"
go test -run '^$' -bench 'BenchmarkACMEOrders$|BenchmarkACMELegoObtain' -benchtime 3000x -count 3 ./server | grep -E '^Benchmark' >>"$out"
