#!/usr/bin/env bash
# The GPU check: every GPU step in one command, on a bare GPU host with no network.
#
#   make gpu-bundle                 # on an ordinary machine: fills .gpu/ (wheels, redis-server, tiny model)
#   bash bench/gpu/run.sh           # on the GPU host, from the repository root, .gpu/ beside it
#   DRY_RUN=1 bash bench/gpu/run.sh # the same steps on a CPU with a small shape (tests/test_gpu_check.py)
#
# Steps, each under its own time limit and all under GPU_CHECK_BUDGET_S (a step that no longer fits
# is skipped and says so): environment (nvidia-smi, torch, CUDA, transformers), the bundle's wheels
# into a private target, a private redis-server, the `gpu`-marked tests, the engine benchmark (the
# Polyglot-ko 12.8B shape with random fp16 weights against the seed's pipeline at 1, 8, 16 and 32 in
# flight, builtin eager and with CUDA graphs, and paged), the decode step compiled against builtin+graphs (at 1 and
# 32, in fp16 and then with int8 weights), one end-to-end burst of `kullm ask` processes
# against a real worker (CUDA_GRAPHS=auto), speculative steps against plain decoding (bench/speculative.py),
# then `transformers serve` against builtin, the Llama twin of the
# same shape (paged and transformers' own continuous batching, which runs on Llama), and last transformers'
# CUDA graphs under paged against paged.
# Everything goes to $OUT when set, else bench/gpu/results/: summary.md first. Exit 0 when no step
# failed or timed out.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DRY_RUN=${DRY_RUN:-0}
BUNDLE=${GPU_BUNDLE:-$ROOT/.gpu}
RESULTS=${OUT:-$ROOT/bench/gpu/results}
PYTHON=${PYTHON:-python3}
SCRATCH=$(mktemp -d /tmp/kullm-gpu-check.XXXXXX)
SITE=$SCRATCH/site
if [ "$DRY_RUN" = 1 ]; then
  BUDGET_S=${GPU_CHECK_BUDGET_S:-240} ARCH=polyglot-ko-small TWIN=llama-small DEVICE=cpu NEW_TOKENS=16 BASELINE=4
  E2E_TOKENS=16 SPEC_ROUNDS=1 SPEC_CONCURRENCY=1
else
  BUDGET_S=${GPU_CHECK_BUDGET_S:-560} ARCH=polyglot-ko-12.8b TWIN=llama-12.8b DEVICE=cuda NEW_TOKENS=64 BASELINE=8
  E2E_TOKENS=128 SPEC_ROUNDS=2 SPEC_CONCURRENCY=1,16
fi
CONCURRENCY=${GPU_CHECK_CONCURRENCY:-1,8,16,32}
GRAPHS_CONCURRENCY=${GPU_CHECK_GRAPHS_CONCURRENCY:-1,16,32}
SERVE_CONCURRENCY=${GPU_CHECK_SERVE_CONCURRENCY:-1,8}
TWIN_CONCURRENCY=${GPU_CHECK_TWIN_CONCURRENCY:-1,16,32}
COMPILE_CONCURRENCY=${GPU_CHECK_COMPILE_CONCURRENCY:-1,32}
CLIENTS=${GPU_CHECK_CLIENTS:-32}
# A shorter check: only the steps whose logs are named here (setup always runs), e.g. gpu-tests,e2e.
ONLY=${GPU_CHECK_STEPS:-}
mkdir -p "$RESULTS"
SUMMARY=$RESULTS/summary.md
STEPS=$SCRATCH/steps.md
START=$(date +%s)
FAILED=0
REDIS_PID=
LOGS_WRITTEN=" "

cleanup() {
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

# step NAME LIMIT_S MIN_S LOG TAIL COMMAND...: run COMMAND under min(LIMIT_S, what is left of the
# budget), or skip it when less than MIN_S is left. Its stdout, then its stderr, go to $RESULTS/LOG;
# the last TAIL lines of its stdout (and of its stderr when it failed) go into the summary.
# Shell functions run in this shell (they set variables) and bound their own time.
step() {
  local name=$1 limit=$2 min=$3 log=$4 tail=$5
  shift 5
  if [ -n "$ONLY" ] && [ "$log" != setup.log ] && [[ ",$ONLY," != *",${log%.log},"* ]]; then
    echo "| $name | – | – | not run: GPU_CHECK_STEPS=$ONLY |" >>"$STEPS"
    return 0
  fi
  local left=$((BUDGET_S - ($(date +%s) - START)))
  if ((left < min)); then
    echo "| $name | – | – | skipped: ${left} s of the budget left, it needs ${min} s |" >>"$STEPS"
    printf '\n## %s\n\nskipped: %s s of the %s s budget left, it needs %s s\n' "$name" "$left" "$BUDGET_S" "$min" >>"$SUMMARY"
    return 1
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit} s)"
  local began rc took result
  began=$(date +%s)
  if [ "$(type -t "$1")" = function ]; then
    "$@" >"$SCRATCH/stdout" 2>"$SCRATCH/stderr"
  else
    timeout -k 10 "$limit" "$@" >"$SCRATCH/stdout" 2>"$SCRATCH/stderr"
  fi
  rc=$?
  took=$(($(date +%s) - began))
  case $rc in
    0) result=passed ;;
    124 | 137) result="timed out at ${limit} s" FAILED=1 ;;
    *) result="failed (exit $rc)" FAILED=1 ;;
  esac
  echo "   $result in ${took} s"
  echo "| $name | ${limit} s | ${took} s | $result |" >>"$STEPS"
  # Steps may share a log (the device tool brings back 8 files at most): the first one of a run truncates it.
  [[ $LOGS_WRITTEN == *" $log "* ]] || : >"$RESULTS/$log"
  LOGS_WRITTEN+="$log "
  { printf '== %s\n' "$name"; cat "$SCRATCH/stdout"; printf '\n--- stderr ---\n'; cat "$SCRATCH/stderr"; } >>"$RESULTS/$log"
  {
    printf '\n## %s — %s in %s s\n\n```\n' "$name" "$result" "$took"
    tail -n "$tail" "$SCRATCH/stdout"
    ((rc != 0)) && { echo "--- stderr (end) ---"; tail -n 25 "$SCRATCH/stderr"; }
    printf '```\n'
  } >>"$SUMMARY"
  return $rc
}

environment() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "command: $([ "$DRY_RUN" = 1 ] && echo 'DRY_RUN=1 ')bash bench/gpu/run.sh (budget ${BUDGET_S} s)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'unknown (no .git here)')"
  if [ -f "$BUNDLE/MANIFEST.txt" ]; then
    sed -n '1,4p' "$BUNDLE/MANIFEST.txt"
  else
    echo "bundle: none at $BUNDLE"
  fi
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
  else
    echo "nvidia-smi: not found"
  fi
  "$PYTHON" - <<'EOF'
import platform, torch, transformers
print(f"python {platform.python_version()} · torch {torch.__version__} (CUDA {torch.version.cuda}) · "
      f"transformers {transformers.__version__}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
          f"capability {p.major}.{p.minor}")
else:
    print("device: no CUDA device visible to torch")
EOF
}

# install: the bundle's wheels into a private target when they are for this Python; otherwise (a dry
# run on another Python) this interpreter must already have what the worker needs.
install() {
  local wanted have
  wanted=$(sed -n 's/^python: \([0-9.]*\) .*/\1/p' "$BUNDLE/MANIFEST.txt" 2>/dev/null)
  have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ -n "$wanted" ] && [ "$wanted" = "$have" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --target "$SITE" "$BUNDLE"/wheels/*.whl || return 1
    echo "installed $(ls "$BUNDLE"/wheels | wc -l) wheels from $BUNDLE/wheels into a private target"
  elif [ "$DRY_RUN" = 1 ]; then
    echo "no bundle for Python $have: the dry run uses this interpreter's packages"
  else
    echo "no wheels for Python $have in $BUNDLE (MANIFEST says '${wanted:-nothing}'): run make gpu-bundle"
    return 1
  fi
  "$PYTHON" - <<'EOF'
import importlib.metadata as m
names = ["redis", "pydantic", "pydantic-settings", "python-dotenv", "pytest", "pytest-asyncio", "pytest-timeout"]
print(" · ".join(f"{n} {m.version(n)}" for n in names))
EOF
}

# A private redis-server (the bundle's when present) on a free port, for the end-to-end run.
start_redis() {
  local port
  port=$("$PYTHON" -c 'from testkit.redis_server import free_port; print(free_port())') || return 1
  mkdir -p "$SCRATCH/redis"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$SCRATCH/redis" --save "" --appendonly no \
    --logfile "$SCRATCH/redis/redis.log" >/dev/null 2>&1 &
  REDIS_PID=$!
  REDIS_URL=redis://127.0.0.1:$port/0
  "$PYTHON" - "$REDIS_URL" <<'EOF'
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1])
for _ in range(100):
    try:
        print(f"redis-server {client.info('server')['redis_version']} at {sys.argv[1]}")
        break
    except redis.ConnectionError:
        time.sleep(0.1)
else:
    sys.exit("the private redis-server did not answer")
EOF
}

export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -x "$BUNDLE/bin/redis-server" ] && export PATH=$BUNDLE/bin:$PATH
[ -f "$BUNDLE/model/ready.json" ] && export KULLM_TINY_MODEL=$BUNDLE/model

printf '# GPU check%s\n\n```\n' "$([ "$DRY_RUN" = 1 ] && echo ' (dry run on the CPU)')" >"$SUMMARY"
environment >>"$SUMMARY" 2>&1
printf '```\n' >>"$SUMMARY"
cat "$SUMMARY"
if [ "$DRY_RUN" != 1 ] && ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
  echo "no CUDA device: use DRY_RUN=1 on a machine without a GPU" | tee -a "$SUMMARY"
  exit 1
fi
echo "| step | limit | took | result |" >"$STEPS"
echo "|---|---|---|---|" >>"$STEPS"

step "install the bundle" 60 5 setup.log 5 install
step "private redis-server" 30 5 setup.log 5 start_redis || REDIS_PID=
step "gpu-marked tests" 150 60 gpu-tests.log 15 \
  env KULLM_GPU_TESTS_DEVICE=$DEVICE PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 \
  "$PYTHON" -m pytest -p pytest_asyncio.plugin -p pytest_timeout -p no:cacheprovider -m gpu -v -rs tests/test_gpu.py
step "engine benchmark" 240 90 engine-bench.log 70 \
  "$PYTHON" -m bench.engine --architecture "$ARCH" --random-weights --device "$DEVICE" \
  --engines builtin,builtin+graphs,paged \
  --concurrency "$CONCURRENCY" --new-tokens "$NEW_TOKENS" --baseline-questions "$BASELINE"
# Issue 39: the decode step compiled (COMPILE_DECODE=1) against builtin+graphs, alone and at the most in flight:
# its share of the bandwidth bound, the step's time and kernels, and what compiling cost (the memory line). Then
# issue 40's int8: the same weights quantised in place (QUANTIZATION=int8), both engines again, each against its
# fp16 row of this run (compiled, Inductor can fuse the int8 weights' widening into the matmul).
step "compiled decode step" 300 80 engines-more.log 60 \
  "$PYTHON" -m bench.engine --architecture "$ARCH" --random-weights --device "$DEVICE" \
  --engines builtin+graphs,builtin+compile --compare "" --concurrency "$COMPILE_CONCURRENCY" --int8 \
  --new-tokens "$NEW_TOKENS" --baseline-questions 2
if [ -n "$REDIS_PID" ]; then
  step "end to end" 150 60 e2e.log 15 \
    "$PYTHON" -m bench.gpu.e2e --redis-url "$REDIS_URL" --architecture "$ARCH" --device "$DEVICE" \
    --clients "$CLIENTS" --new-tokens "$E2E_TOKENS" --worker-log "$RESULTS/e2e-worker.log"
else
  echo "| end to end | – | – | skipped: no private redis-server |" >>"$STEPS"
  FAILED=1
fi

# Speculative steps (issue 40): 맞춤법 교정 of a ~400-token text and plain questions, plain decoding against
# prompt-lookup guesses, at 1 and 16 in flight (graphs on, as CUDA_GRAPHS=auto has them).
step "speculative steps" 180 90 engines-more.log 25 \
  "$PYTHON" -m bench.speculative --architecture "$ARCH" --device "$DEVICE" --rounds "$SPEC_ROUNDS" \
  --concurrency "$SPEC_CONCURRENCY"

# The rest of issue 16's comparison, each step on its own (one that fails or no longer fits costs nothing above),
# sharing one log: `transformers serve` (plain mode: its continuous batching fails on GPT-NeoX) directly and
# behind ENGINE=openai; the Llama twin (KULLM3's architecture), where transformers' own continuous batching
# runs; and last, transformers' CUDA graphs under paged against paged eager.
step "transformers serve" 200 100 engines-more.log 30 \
  env KULLM_BENCH_SERVE_LOG="$RESULTS/serve.log" \
  "$PYTHON" -m bench.engine --architecture "$ARCH" --random-weights --device "$DEVICE" \
  --engines builtin+graphs,serve --compare queue --concurrency "$SERVE_CONCURRENCY" \
  --new-tokens "$NEW_TOKENS" --baseline-questions 2
step "Llama twin" 150 80 engines-more.log 30 \
  "$PYTHON" -m bench.engine --architecture "$TWIN" --random-weights --device "$DEVICE" \
  --engines builtin+graphs,paged --compare static,cb --concurrency "$TWIN_CONCURRENCY" \
  --new-tokens "$NEW_TOKENS" --baseline-questions 2
step "CUDA graphs, paged" 120 45 engines-more.log 30 \
  "$PYTHON" -m bench.engine --architecture "$ARCH" --random-weights --device "$DEVICE" \
  --engines paged,paged+graphs --compare "" --concurrency "$GRAPHS_CONCURRENCY" \
  --new-tokens "$NEW_TOKENS" --baseline-questions 2

printf '\n## Steps (%s s in all, budget %s s)\n\n' "$(($(date +%s) - START))" "$BUDGET_S" >>"$SUMMARY"
cat "$STEPS" >>"$SUMMARY"
cat "$STEPS"
echo "results: $RESULTS"
exit $FAILED
