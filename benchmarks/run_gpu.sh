#!/usr/bin/env bash
# Everything the GPU has to run (invariance tests and benchmarks), in parts that each fit one
# 10-minute device call; `all` runs every part in order. Writes under OUT_DIR (default
# benchmarks/results): gpu_env.txt, one log per part (pytest -v: a run cut off by its timeout
# still names every test that finished), and the benchmarks' JSON + PNG.
#
#   bash benchmarks/run_gpu.sh OUT_DIR [PART ...]
#
# PART (times seen on an H100, 2026-11-23, and an H200, 2026-11-29, from the pieces' own runs):
#   kernels   matmul, reduction and backend GPU tests (H200, v7: 188 s; v10, beside hf: 406 s)
#   attention attention GPU tests (v5: 164 s; H200, v7: more than 220 s, 29 of 34 done there)
#   launches  the kernels Inductor launches itself (lowerings): the matmul template, row
#             reductions, scan and MoE routing (H100, 2026-12-06: 15 tests in ~270 s with cold
#             compiles, so the part is split)
#   graphs    launched attention, whole models launched by Inductor, reduce-overhead mode
#   hf        Hugging Face models: batch / padding invariance, generate, MoE (~530 s; H200 v10: 406 s)
#   rl        examples/rl.py's GPU preset (~1B shapes, bf16): stock, then the backend, each up to a
#             call's limit (RL_CONTENDERS picks one for a call of its own; RL_ARGS e.g. "--steps 10");
#             rl.json / rl.png
#   llm       examples/llm.py serving: 500 requests, quick run, stock report (~370 s)
#   bench     matmul vs cuBLAS, attention vs SDPA, packed and unpacked GQA (not timed as a part):
#             python -m benchmarks matmul / attention
#   e2e       the llama-1b model end to end vs stock torch.compile (~300 s with its compiles):
#             python -m benchmarks e2e
#   tune      sweeps (tools/tune/): small-M split-K strategies (merge tile, PDL; bitwise vs the shipped kernel,
#             ~60 s), matmul tiles / fetch paths (bitwise vs the v4 kernel; H200, v9: 9 candidates
#             x 30 cases in 203 s: run tools/tune/tune_matmul.py on its own), attention
#             tiles (not part of `all`: run when changing configs; more than one call's limit)
#   ab        alternating A/B of configs knobs on the llama-1b decode step, bits compared, what
#             each compile rewrote printed (AB_KNOB: tools/tune/ab_knob_e2e.py's arguments, required, e.g.
#             AB_KNOB="--compile-time REDUCTION_FUSE_RMS_NORM=0"; H200, v9: three compile-time
#             specs, a model copy compiled for each, ~160 s)
#   models    Hugging Face models as users call them (python -m benchmarks models): Llama, Qwen3,
#             GPT-2, Qwen3-MoE forward, stock torch.compile vs the backend, modes default and
#             reduce-overhead, prefill and one decode step; hf_models.json / .png, rows merged into
#             an existing one. HF_ARGS: the script's subset flags, e.g. HF_ARGS="--models llama,gpt2
#             --shapes 1b --modes default" (all of it is more than one call: see the script's header)
#   zoo       the model zoo on the GPU (tests/gpu/test_zoo_gpu.py; results in models-gpu.json, the
#             file tools/gen_models_doc.py reads as docs/models-gpu.json). Subsets through the test's
#             variables: INDUCTOR_BI_ZOO_MODELS, INDUCTOR_BI_ZOO_DTYPES (here bfloat16 unless set),
#             INDUCTOR_BI_ZOO_EXAMPLES (H200, 2026-12-05: 24 models ~40 s each + ~15 s per block
#             and dtype: the whole zoo in bf16 is about three calls)
#   suites    every GPU invariance suite above (kernels, attention, launches, graphs, hf, the quick
#             llm serving check; not the zoo) in one pytest spread over GPU_WORKERS xdist processes
#             (default 12: the machine's 16 cores compile side by side, the tests share the GPU)
#   tp        several GPUs of one host (nvidia-h100-x2 / x4): tensor parallelism over NCCL, the
#             LLM's logits == one GPU's and rows alone == in a batch (tests/gpu/test_tensor_parallel_gpu.py),
#             then python -m benchmarks tensor_parallel at TP_DEGREE (default 2): tensor_parallel.json
#   all       kernels attention launches graphs hf llm bench e2e (more than one device call's limit)
#
# A test running past TEST_TIMEOUT_S (default 240) fails with its stack (pytest-timeout): a slow
# compile or a hang is named, and the part goes on.
# Two GPUs (the device tool's nvidia-h200-x2 costs the same device time as one): run parts side
# by side, one output folder each, e.g. (session 17, v10: kernels + hf in one 10-minute call)
#   CUDA_VISIBLE_DEVICES=0 bash benchmarks/run_gpu.sh $OUT/g0 kernels attention &
#   CUDA_VISIBLE_DEVICES=1 bash benchmarks/run_gpu.sh $OUT/g1 hf & wait
# Count the files: the device tool brings back at most 8 per call. Each part writes its log
# plus gpu_env.txt per folder; bench adds matmul.json / .png and attention.json / .png, e2e e2e.json / .png,
# models hf_models.json / .png, zoo models-gpu.json.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}; shift || true
parts=("${@:-all}")
[ "${parts[0]}" = all ] && parts=(kernels attention launches graphs hf llm bench e2e)
mkdir -p "$out" && out=$(cd "$out" && pwd)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-gpu}
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} > "$out/gpu_env.txt"
cat "$out/gpu_env.txt"

# pytest with every test named (-v) and a per-file time limit, appended to the part's log.
tests() {
  local log=$1 limit=$2; shift 2
  timeout "$limit" python3 -m pytest -v -rfEs -p no:cacheprovider --timeout=${TEST_TIMEOUT_S:-240} --durations=15 -W ignore::DeprecationWarning "$@" 2>&1 \
    | tee -a "$log" | grep -E "PASSED|FAILED|ERROR|XPASS|XFAIL| passed| failed| skipped|^\[" || true
}

for part in "${parts[@]}"; do
  log="$out/gpu_$part.txt"
  cat "$out/gpu_env.txt" > "$log"
  echo "== $part"
  case $part in
    kernels) tests "$log" 500 tests/gpu/test_matmul_gpu.py tests/gpu/test_reduction_gpu.py tests/gpu/test_backend_gpu.py ;;
    attention) tests "$log" 500 tests/gpu/test_attention_gpu.py ;;
    launches) tests "$log" 560 tests/gpu/test_matmul_template_gpu.py tests/gpu/test_lowering_reductions_gpu.py \
                tests/gpu/test_lowering_scan_moe_gpu.py ;;
    graphs) tests "$log" 560 tests/gpu/test_lowering_attention_gpu.py tests/gpu/test_inductor_launches_gpu.py \
                tests/gpu/test_reduce_overhead_gpu.py ;;
    hf) tests "$log" 570 tests/gpu/test_hf_gpu.py ;;
    suites) tests "$log" ${SUITES_LIMIT_S:-570} -n ${GPU_WORKERS:-12} --dist worksteal \
              $(ls tests/gpu/test_*.py | grep -v -e test_zoo_gpu -e test_tensor_parallel_gpu) -k "not full" ;;
    llm) tests "$log" 570 -s tests/gpu/test_llm_gpu.py ;;
    rl) for who in ${RL_CONTENDERS:-stock batch_invariant}; do
          timeout 570 python3 examples/rl.py --device cuda --contenders "$who" --out "$out" ${RL_ARGS:-} 2>&1 | tee -a "$log" | grep -v Warn | tail -30
        done ;;
    bench) { timeout 300 python3 -m benchmarks matmul --out "$out"; timeout 240 python3 -m benchmarks attention --out "$out"; } 2>&1 | tee -a "$log" | tail -40 ;;
    e2e) timeout 570 python3 -m benchmarks e2e --out "$out" 2>&1 | tee -a "$log" | tail -12 ;;
    models) timeout 570 python3 -m benchmarks models --out "$out" ${HF_ARGS:-} 2>&1 | tee -a "$log" | grep -v Warn | tail -60 ;;
    tp) tests "$log" 300 tests/gpu/test_tensor_parallel_gpu.py
        timeout 270 python3 -m benchmarks tensor_parallel --degree ${TP_DEGREE:-2} --out "$out" 2>&1 | tee -a "$log" | grep -v Warn | tail -20 ;;
    zoo) INDUCTOR_BI_ZOO_GPU_JSON="$out/models-gpu.json" INDUCTOR_BI_ZOO_DTYPES=${INDUCTOR_BI_ZOO_DTYPES:-bfloat16} \
           tests "$log" 570 tests/gpu/test_zoo_gpu.py ;;
    ab) [ -n "${AB_KNOB:-}" ] || { echo "ab: set AB_KNOB to tools/tune/ab_knob_e2e.py's arguments" >&2; exit 2; }
        timeout 450 python3 tools/tune/ab_knob_e2e.py $AB_KNOB 2>&1 | tee -a "$log" | grep -v Warn | tail -14 ;;
    tune) { timeout 150 python3 tools/tune/tune_split_k.py; timeout 420 python3 tools/tune/tune_matmul.py --out "$out"; timeout 240 python3 tools/tune/tune_attention.py; } 2>&1 | tee -a "$log" | grep -v Warn | tail -70 ;;
    *) echo "unknown part: $part (kernels, attention, launches, graphs, hf, suites, tp, llm, rl, bench, e2e, models, zoo, ab, tune, all)" >&2; exit 2 ;;
  esac
done
