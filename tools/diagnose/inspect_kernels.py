"""Compile our Triton kernels for an H100 (sm_90) on any machine, no GPU needed, exactly as a given
call would specialize them, and report what decides their speed before any device time is spent:
registers, spills (local-memory stores and loads in the SASS), shared memory, whether the K / key loop is software-pipelined
(asynchronous copies in the loop) and how many Hopper wgmma ops it keeps in flight.

How: the public kernel functions run on 'meta' tensors with the CUDA configs; ``launch`` is
replaced by a recorder; each recorded call's arguments are specialized the way Triton's launcher
does (integers == 1 become constants, multiples of 16 and tensors get the divisibility hint;
allocations are 16-byte aligned), and ``triton.compile`` targets sm_90. ptxas and cuobjdump come
with Triton.

    PYTHONPATH=. python tools/diagnose/inspect_kernels.py                 # shipped configs, Llama-3-8B-like calls
    PYTHONPATH=. python tools/diagnose/inspect_kernels.py --matmul-candidates   # tune_matmul.py's tile candidates
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.common import pinned_matmul_tile  # noqa: E402
from inductor_bi.kernels import _device, _launch, attention, knobs, matmul, reduction, reduction_table  # noqa: E402
from inductor_bi.kernels._launch import compiled_kernel  # noqa: E402

H100 = GPUTarget("cuda", 90, 32)
H100_SMS = 132  # H100 SXM
# What _device.gpu reads from an H100: SM count, capability major, shared memory per block.
H100_PROPERTIES = _device.GpuProperties(sm_count=H100_SMS, capability_major=9, shared_bytes=232448)
LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg", "enable_fp_fusion", "launch_pdl")


@contextlib.contextmanager
def recorded_launches():
    """Run the kernels' host code for CUDA on meta tensors; record each launch instead of running it."""
    calls = []

    def record(kernel, grid, device, *args, **kwargs):
        calls.append((compiled_kernel(kernel), args, kwargs))

    with contextlib.ExitStack() as stack:
        for module in (matmul, attention, reduction):
            stack.enter_context(_patched(module, "launch", record))
        for module in (_launch, matmul, attention):  # every name the host code asks "interpreted?"
            stack.enter_context(_patched(module, "uses_interpreter", lambda device: False))
        cuda = torch.device("cuda")
        # The H100's answer to "can this dtype be fetched by TMA?" (sm_90 >= TMA_MIN_CAPABILITY_MAJOR).
        stack.enter_context(_patched(_device, "tma_available", lambda dtype, device: dtype in _device.TMA_DTYPES))
        stack.enter_context(_patched(_device, "gpu", lambda device: H100_PROPERTIES))
        stack.enter_context(_patched(reduction, "reduction_config", lambda r, dtype, device: reduction_table.reduction_config(r, dtype, cuda)))
        yield calls


@contextlib.contextmanager
def _patched(module, name, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def specialization(kernel, args, kwargs):
    """(signature, constexprs, attrs, options): what Triton's launcher derives from these
    arguments for sm_90, honouring the kernel's ``do_not_specialize``. Two launches with equal
    results run one compiled binary."""
    names = kernel.arg_names
    values = {p.name: p.default for p in kernel.params if p.has_default}
    values.update(zip(names, args))
    values.update({k: v for k, v in kwargs.items() if k not in LAUNCH_OPTIONS})
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, param) in enumerate(zip(names, kernel.params)):
        value = values[name]
        if name in kernel.constexprs or i in kernel.constexprs or isinstance(value, (triton.language.dtype, str)):
            signature[name], constexprs[name] = "constexpr", value
            continue
        kind, spec = native_specialize_impl(CUDABackend, value, False, not param.do_not_specialize, not param.do_not_specialize_on_alignment)
        if kind == "constexpr":  # an integer equal to 1
            signature[name], constexprs[name] = "constexpr", spec
            continue
        signature[name] = kind
        if spec:
            attrs[(i,)] = CUDABackend.parse_attr(spec)
    options = {k: v for k, v in kwargs.items() if k in LAUNCH_OPTIONS}
    return signature, constexprs, attrs, options


def binary_key(kernel, args, kwargs) -> str:
    """A launch's compiled binary, named: the kernel and its specialization."""
    signature, constexprs, attrs, options = specialization(kernel, args, kwargs)
    return repr((kernel.fn.__name__, sorted(signature.items()), sorted((k, repr(v)) for k, v in constexprs.items()),
                 sorted(attrs.items()), sorted(options.items())))


def compile_for_h100(kernel, args, kwargs):
    """triton.compile for sm_90 with the specialization a real launch with these arguments gets."""
    signature, constexprs, attrs, options = specialization(kernel, args, kwargs)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=H100, options=options)


def resources(compiled) -> dict:
    """Registers and spills (local-memory stores / loads in the SASS) from the cubin, shared
    memory, and what the main loop looks like in the TTGIR."""
    info = {"shared_kb": compiled.metadata.shared / 1024}
    cuobjdump = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True).stdout
    m = re.search(r"\bREG:(\d+)", usage)
    info["registers"] = int(m[1]) if m else None
    info["spill_stores"] = len(re.findall(r"\bSTL\b", sass))
    info["spill_loads"] = len(re.findall(r"\bLDL\b", sass))
    ttgir = compiled.asm["ttgir"]
    loop = ttgir[ttgir.find("scf.for"):]
    info["async_copies_in_loop"] = loop.count("async_copy_global_to_local") + loop.count("async_tma_copy")
    info["wgmma"] = "warp_group_dot " in ttgir or "warp_group_dot %" in ttgir
    pendings = sorted({int(p) for p in re.findall(r"warp_group_dot_wait[^\n]*pendings = (\d+)", loop)})
    info["wgmma_pendings_in_loop"] = pendings
    return info


def float_ops(compiled) -> list[str]:
    """The kernel's floating-point instructions (PTX opcodes, in program order): two calls whose
    lists are equal run the same arithmetic; a batch-dependent argument value must not change it."""
    ops = []
    for line in compiled.asm["ptx"].splitlines():
        text = line.strip()
        if text.startswith(("//", ".")) or not text:
            continue
        if text.startswith("shfl.sync.idx"):  # broadcasts an integer (the warp id), no arithmetic
            continue
        if re.search(r"\.(f16|bf16|f32|f64)(x2)?\b|wgmma|ex2|shfl", text):
            ops.append(text.split()[0])
    return ops


def per_k_step(ops: list[str]) -> tuple[list[str], list[int]]:
    """The float ops with each run of MMA instructions (one tl.dot: BLOCK_K / 16 MMAs chained on
    one accumulator) as one entry, and the runs' lengths: two kernels with equal entries and
    K chunks issue the same MMA sequence per chunk whatever their K step (matmul_table.MATMUL_MMA_K)."""
    entries, runs = [], []
    for op in ops:
        if op.startswith("wgmma.mma_async") and entries and entries[-1] == op:
            runs[-1] += 1
            continue
        entries.append(op)
        if op.startswith("wgmma.mma_async"):
            runs.append(1)
    return entries, runs


def matmul_calls(m: int, n: int, k: int, tma: bool | None = None, split_k: bool = False):
    a = torch.empty(m, k, dtype=torch.bfloat16, device="meta")
    w = torch.empty(n, k, dtype=torch.bfloat16, device="meta")
    with recorded_launches() as calls:
        matmul.invariant_matmul(a, w.t(), split_k=split_k, tma=tma)
    return calls


def reduction_calls(rows: int, r: int, dtype=torch.bfloat16):
    """One launch of every row-reduction kernel over [rows, r]."""
    x = torch.empty(rows, r, dtype=dtype, device="meta")
    w = torch.empty(r, dtype=dtype, device="meta")
    with recorded_launches() as calls:
        reduction.invariant_sum(x, [-1])
        reduction.invariant_var_mean(x, [-1])
        reduction.invariant_softmax(x, -1)
        reduction.invariant_rms_norm_rows(x, 1e-6, w, dtype, dtype)
        reduction.invariant_layer_norm(x, 1, w, w, 1e-5)
    return calls


def attention_calls(batch: int, lq: int, lk: int, pack_gqa: bool | None = None, path: str = "sequential", tma: bool | None = None):
    q = torch.empty(batch, 32, lq, 128, dtype=torch.bfloat16, device="meta")
    kv = torch.empty(batch, 8, lk, 128, dtype=torch.bfloat16, device="meta")
    with recorded_launches() as calls:
        attention.fixed_split_attention(q, kv, kv, is_causal=lq > 1, enable_gqa=True, path=path, pack_gqa=pack_gqa, tma=tma)
    return calls


def report(label: str, calls, reference_ops: list[str] | None = None) -> None:
    """One line per launch; with ``reference_ops`` (per_k_step entries), whether the launch issues
    the same float ops per K step (the same arithmetic by construction)."""
    for kernel, args, kwargs in calls:
        compiled = compile_for_h100(kernel, args, kwargs)
        info = resources(compiled)
        same = "" if reference_ops is None else f"  same float ops per K step as shipped short: {per_k_step(float_ops(compiled))[0] == reference_ops}"
        print(f"{label:46s} regs {info['registers']!s:>4}  spills st/ld {info['spill_stores']:3d}/{info['spill_loads']:3d}  smem {info['shared_kb']:6.1f} KiB  "
              f"async copies in loop {info['async_copies_in_loop']}  wgmma {'yes' if info['wgmma'] else 'no '}  "
              f"pendings in loop {info['wgmma_pendings_in_loop']}{same}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--matmul-candidates", action="store_true", help="tune_matmul.py's tiles instead of the shipped one")
    args = ap.parse_args()
    candidates, reference_ops = [(None, None)], None
    if args.matmul_candidates:
        from tune_matmul import CANDIDATES, name

        candidates = CANDIDATES
        (short_call,) = matmul_calls(64, 4096, 4096, tma=True)
        reference_ops = per_k_step(float_ops(compile_for_h100(*short_call)))[0]
    for cfg, tma, *knob_values in candidates:
        if cfg is None:  # the shipped configs: the tall launch shape at 4096 rows, the short one at 64
            report("matmul bf16 shipped, 4096^3", matmul_calls(4096, 4096, 4096))
            report("matmul bf16 shipped, M=64 N=K=4096", matmul_calls(64, 4096, 4096))
            continue
        with pinned_matmul_tile(torch.bfloat16, cfg), knobs.overridden(**(knob_values[0] if knob_values else {})):
            report(f"matmul bf16 {name((cfg, tma, *knob_values))} (4096^3)", matmul_calls(4096, 4096, 4096, tma=tma), reference_ops)
    if not args.matmul_candidates:
        report("attention bf16 prefill 4096, D=128", attention_calls(1, 4096, 4096))
        report("attention bf16 decode B=16 KV 4096", attention_calls(16, 1, 4096, pack_gqa=False))
        report("attention bf16 decode B=16 KV 4096, GQA packed", attention_calls(16, 1, 4096, pack_gqa=True))


if __name__ == "__main__":
    main()
