"""One command per question: ``python -m benchmarks QUESTION [ARGS ...]`` from the repository root.

ARGS go to the benchmark as they are (``python -m benchmarks matmul --help`` lists its own). Each
benchmark is one file of this folder (or of examples/) and writes its JSON + PNG under ``--out``
(default benchmarks/results). The GPU runs go through ``bash benchmarks/run_gpu.sh OUT_DIR PART``;
the tuning and diagnosis scripts are under tools/tune/ and tools/diagnose/.
"""

from __future__ import annotations

import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# question -> (the module or file that answers it, what it answers)
QUESTIONS = {
    "models": ("benchmarks.hf_models", "Hugging Face models as users call them: stock torch.compile vs the backend"),
    "matmul": ("benchmarks.matmul", "invariant_matmul vs cuBLAS (torch.mm), bf16, M = 1..8192"),
    "attention": ("benchmarks.attention", "fixed_split_attention vs stock SDPA (flash), prefill and decode"),
    "e2e": ("benchmarks.e2e", "the llama-1b model of examples/model.py end to end vs stock torch.compile"),
    "tensor_parallel": ("benchmarks.tensor_parallel", "examples/model.py's LLM split over the GPUs of one host: stock vs the backend at one degree"),
    "serving": ("examples/llm.py", "serving with dynamic batching: is a request's output its own?"),
    "rl": ("examples/rl.py", "a GRPO-style loop: sampler vs trainer log-probs, stock vs the backend"),
}


def usage() -> str:
    width = max(map(len, QUESTIONS))
    rows = "\n".join(f"  {q:<{width}}  {what} ({where})" for q, (where, what) in QUESTIONS.items())
    return f"usage: python -m benchmarks {{{'|'.join(QUESTIONS)}}} [ARGS ...]\n\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    if argv[0] not in QUESTIONS:
        print(f"unknown benchmark {argv[0]!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    question, where = argv[0], QUESTIONS[argv[0]][0]
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # benchmarks.common, inductor_bi from a source tree
    sys.argv = [f"python -m benchmarks {question}", *argv[1:]]
    try:
        if where.endswith(".py"):
            runpy.run_path(os.path.join(ROOT, where), run_name="__main__")
        else:
            runpy.run_module(where, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
