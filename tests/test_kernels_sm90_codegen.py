"""What the H100 will run, checked without a GPU: the shipped kernels compiled for sm_90 exactly as
a Llama-sized call specializes them (tools/diagnose/inspect_kernels.py). A change that stops the
software pipeline, drops Hopper's wgmma or makes the matmul spill shows here, before any device
time is spent on finding out why it got slow."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from inductor_bi.kernels import _device, attention_table, matmul_table, reduction_table

from tests._support import load_file

inspect_kernels = load_file("tools/diagnose/inspect_kernels.py", "inspect_kernels")


def _compiled(calls):
    return [inspect_kernels.resources(inspect_kernels.compile_for_h100(*call)) for call in calls]


@pytest.mark.parametrize("m", [64, 4096], ids=["short", "tall"])
def test_matmul_k_loop_is_pipelined_on_wgmma_without_spills(m):
    (info,) = _compiled(inspect_kernels.matmul_calls(m, 4096, 4096))
    assert info["wgmma"] and info["async_copies_in_loop"] >= 2, info  # A and B tiles prefetched
    assert 1 in info["wgmma_pendings_in_loop"], info  # one wgmma stays in flight across K steps
    assert info["spill_stores"] == 0 and info["spill_loads"] == 0, info


@pytest.mark.parametrize("shape", [(1, 4096, 4096), (16, 1, 4096)], ids=["prefill", "decode"])
def test_attention_key_loop_is_pipelined_on_wgmma(shape):
    for info in _compiled(inspect_kernels.attention_calls(*shape)):
        assert info["wgmma"] and info["async_copies_in_loop"] > 0, info


def _matmul_float_ops(m, n, **kwargs):
    (call,) = inspect_kernels.matmul_calls(m, n, 4096, **kwargs)
    return inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*call))


def test_matmul_float_ops_are_the_same_for_any_rows_or_columns(monkeypatch):
    """Triton compiles a variant per argument value class (== 1, divisible by 16); the matmul's
    arithmetic must not follow it. (This check found nothing to fix in the matmul; the attention
    kernel's variants differed in their tl.sum tree, which is why its row sums go through the MMA unit.) The
    calls with enough tall tiles run the tall launch shape, the others the short one: one
    arithmetic, each MMA run covering its shape's K step."""
    reference, reference_runs = inspect_kernels.per_k_step(_matmul_float_ops(4096, 4096))
    assert any(op.startswith("wgmma") for op in reference)
    tall, short = matmul_table.MATMUL_CUDA_TALL[torch.bfloat16], matmul_table.MATMUL_CUDA[torch.bfloat16]
    assert reference_runs == [tall.block_k // matmul_table.MATMUL_MMA_K]
    monkeypatch.setattr(_device, "gpu", lambda device: inspect_kernels.H100_PROPERTIES)
    for m, n in [(1, 4096), (7, 4096), (77, 4096), (128, 4096), (4096, 1), (4096, 77)]:
        entries, runs = inspect_kernels.per_k_step(_matmul_float_ops(m, n))
        assert entries == reference, (m, n)
        launched = matmul_table.matmul_config(torch.bfloat16, torch.device("cuda"), False, output=(1, m, n))
        assert launched in (tall, short) and runs == [launched.block_k // matmul_table.MATMUL_MMA_K], (m, n, runs)


def test_the_short_tiles_128_wide_k_step_is_two_of_the_tall_tiles_steps():
    """The short tile's K step (128) is twice the tall tile's (64): it issues the tall tile's MMA
    instruction, eight a step instead of four, between the same float ops, so the two launch
    shapes run one arithmetic (the H200 sweep, tune_matmul_h200_v9: the same bits in all 30
    cases). A K step that is not whole MMAs would not share it."""
    short, tall = matmul_table.MATMUL_CUDA[torch.bfloat16], matmul_table.MATMUL_CUDA_TALL[torch.bfloat16]
    assert short.block_k == 2 * tall.block_k and matmul_table.tall_shares_arithmetic(short, tall)
    entries, runs = inspect_kernels.per_k_step(_matmul_float_ops(64, 4096))
    reference, reference_runs = inspect_kernels.per_k_step(_matmul_float_ops(4096, 4096))
    assert entries == reference and runs == [8] and reference_runs == [4]
    assert not matmul_table.tall_shares_arithmetic(dataclasses.replace(short, block_k=120), tall)  # not whole MMAs


@pytest.mark.parametrize("m", [64, 4096], ids=["short", "tall"])
def test_matmul_tma_and_pointer_loads_run_the_same_float_ops(m):
    """Layouts TMA cannot take (offset views, odd strides) fall back to pointer loads: same bits."""
    assert _matmul_float_ops(m, 4096, tma=True) == _matmul_float_ops(m, 4096, tma=False)


def test_matmul_tall_launch_shape_is_the_short_tile_per_warpgroup(monkeypatch):
    for dtype, tall in matmul_table.MATMUL_CUDA_TALL.items():
        assert matmul_table.tall_shares_arithmetic(matmul_table.MATMUL_CUDA[dtype], tall), dtype
    monkeypatch.setattr(_device, "gpu", lambda device: inspect_kernels.H100_PROPERTIES)
    cuda = torch.device("cuda")
    tall, short = matmul_table.MATMUL_CUDA_TALL[torch.bfloat16], matmul_table.MATMUL_CUDA[torch.bfloat16]
    assert matmul_table.matmul_config(torch.bfloat16, cuda, False, output=(1, 4096, 4096)) is tall
    assert matmul_table.matmul_config(torch.bfloat16, cuda, False, output=(1, 256, 4096)) is short  # 64 tall tiles
    assert matmul_table.matmul_config(torch.bfloat16, cuda, False, output=(1, 512, 4096)) is tall  # 128 of 132 SMs
    assert matmul_table.matmul_config(torch.bfloat16, cuda, False, output=(1, 1, 128256)) is short  # lm_head decode
    monkeypatch.setattr(_device, "gpu", lambda device: _device.GpuProperties(108, 8, 166912))  # an A100: mma.sync, no warpgroups
    assert matmul_table.matmul_config(torch.bfloat16, cuda, False, output=(1, 4096, 4096)) is short


def test_matmul_split_k_programs_run_the_short_tile_float_ops():
    (split, *_merge) = inspect_kernels.matmul_calls(64, 4096, 4096, split_k=True)
    split_ops = inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*split))
    assert [op for op in split_ops if op.startswith("wgmma.mma")] == [op for op in _matmul_float_ops(64, 4096) if op.startswith("wgmma.mma")]


def test_matmul_stages_fit_the_gpus_shared_memory(monkeypatch):
    """Pipeline depth is not arithmetic: a GPU with less shared memory per block gets fewer stages
    of the same tile instead of a launch failure."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda, short = torch.device("cuda"), matmul_table.MATMUL_CUDA[torch.bfloat16]
    monkeypatch.setattr(_device, "gpu", lambda device: inspect_kernels.H100_PROPERTIES)
    assert matmul_table.matmul_config(torch.bfloat16, cuda, False, output=(1, 16, 4096)) == short
    monkeypatch.setattr(_device, "gpu", lambda device: _device.GpuProperties(128, 8, 101376))  # 99 KiB per block (sm_89)
    fitted = matmul_table.matmul_config(torch.bfloat16, cuda, False, output=(1, 16, 4096))
    assert fitted.num_stages == 2 and dataclasses.replace(fitted, num_stages=short.num_stages) == short


MERGE_IN_LAST = {  # kernel: (its table, its knob, one small split launch as a Llama-sized decode makes it)
    "matmul": (matmul_table, "MATMUL_MERGE_IN_LAST_PROGRAM", lambda: inspect_kernels.matmul_calls(1, 2048, 2048, split_k=True)),
    "attention": (attention_table, "ATTENTION_MERGE_IN_LAST_PROGRAM", lambda: inspect_kernels.attention_calls(4, 1, 4096, path="split")),
}


@pytest.mark.parametrize("kernel", list(MERGE_IN_LAST))
def test_merge_in_the_last_program_counts_in_after_its_store_and_adds_as_the_merge_launch(kernel, monkeypatch):
    """*_MERGE_IN_LAST_PROGRAM: the split kernel must store its partial, wait for every
    thread (bar.sync), count itself in with one acq_rel atomic at GPU scope, read the other
    partials past L1 (.cg), and run exactly the float ops of the split plus the merge launch."""
    table, knob, calls = MERGE_IN_LAST[kernel]
    monkeypatch.setattr(table, knob, True)
    (last,) = calls()
    assert last[2]["MERGE_IN_LAST"] and last[2]["MODE"] == 1
    monkeypatch.setattr(table, knob, False)
    split, merge = calls()
    compiled = inspect_kernels.compile_for_h100(*last)
    lines = compiled.asm["ptx"].splitlines()
    (atomic,) = [line.strip() for line in lines if "atom." in line]
    assert ".acq_rel" in atomic and ".gpu" in atomic and ".add" in atomic, atomic
    at = next(i for i, line in enumerate(lines) if "atom." in line)
    partial_store = max(i for i, line in enumerate(lines[:at]) if "st.global" in line)
    assert any("bar.sync" in line for line in lines[partial_store:at]), "no barrier between the partial's store and the count"
    assert any("ld.global.cg" in line for line in lines[at:]), "partials read through L1"
    split_ops = inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*split))
    merge_ops = inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*merge))
    ops = inspect_kernels.float_ops(compiled)
    assert ops[: len(split_ops)] == split_ops
    # The merge's ops: the same ones; the scheduler may order independent rows' ops differently
    # (attention), which cannot change a row's result: each row's chain is the same source, with
    # FMA contraction off in attention.
    assert sorted(ops[len(split_ops):]) == sorted(merge_ops)
    if kernel == "matmul":
        assert ops[len(split_ops):] == merge_ops


def test_attention_with_mma_row_sums_runs_the_same_arithmetic_for_any_length():
    """Row sums by MMA leave no tl.sum in the attention kernel, so the length variants Triton
    compiles (77 keys vs 80: divisibility by 16) may differ only in the selects of masked loads,
    not in any arithmetic op (a tl.sum tree follows the register layout, which may differ there)."""

    def arithmetic(lk):
        (call,) = inspect_kernels.attention_calls(1, lk, lk)
        ops = inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*call))
        return [op for op in ops if not op.startswith("selp")]

    reference = arithmetic(4096)
    assert sum(op.startswith("wgmma.mma") for op in reference) > 0
    for lk in (77, 78, 80, 128):
        assert arithmetic(lk) == reference, lk


@pytest.mark.parametrize(
    "shape, path, pack_gqa",
    [((1, 4096, 4096), "sequential", False), ((1, 4096, 4096), "sequential", None), ((16, 1, 4096), "split", None)],
    ids=["prefill-unpacked", "prefill", "decode"],
)
def test_attention_tma_and_pointer_loads_run_the_same_float_ops(shape, path, pack_gqa, monkeypatch):
    """K / V by TMA and ATTENTION_Q_BY_TMA (the query tile, where not GQA-packed) change how
    tiles reach shared memory, not one float op; and they free registers
    the pointer loads held (prefill spilled 49 stores by pointers, 17 with K / V by TMA, 8 with Q
    too, when this test was written)."""
    kernels = {}
    for tma, q_by_tma in ((False, False), (True, False), (True, True)):
        monkeypatch.setattr(attention_table, "ATTENTION_Q_BY_TMA", q_by_tma)
        calls = inspect_kernels.attention_calls(*shape, pack_gqa=pack_gqa, path=path, tma=tma)
        # The query tile goes by TMA only where its rows are one head's positions (not GQA-packed).
        assert all(kwargs["USE_TMA"] is tma and kwargs["Q_BY_TMA"] is (q_by_tma and kwargs["HEADS_PER_PROG"] == 1) for _, _, kwargs in calls)
        kernels[tma, q_by_tma] = [inspect_kernels.compile_for_h100(*call) for call in calls]
    pointer = kernels[False, False]
    for fetched in (kernels[True, False], kernels[True, True]):
        assert [inspect_kernels.float_ops(c) for c in fetched] == [inspect_kernels.float_ops(c) for c in pointer]
        for tma_kernel, pointer_kernel in zip(fetched, pointer):
            assert inspect_kernels.resources(tma_kernel)["spill_stores"] <= inspect_kernels.resources(pointer_kernel)["spill_stores"]


@pytest.mark.parametrize("stages", [3, 4, 5])
def test_attention_pipeline_depth_is_not_arithmetic(stages, monkeypatch):
    """attention_table.ATTENTION_SPLIT_STAGES may give decode (split launches) another pipeline depth
    than prefill: the arithmetic must stay the tile's (only masked-load selects may differ)."""
    def arithmetic():
        ops = [inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*call)) for call in inspect_kernels.attention_calls(16, 1, 4096, path="split")]
        return [[op for op in kernel if not op.startswith("selp")] for kernel in ops]

    monkeypatch.setattr(attention_table, "ATTENTION_SPLIT_STAGES", None)  # the tile's own depth
    reference = arithmetic()
    monkeypatch.setattr(attention_table, "ATTENTION_SPLIT_STAGES", stages)
    split = inspect_kernels.attention_calls(16, 1, 4096, path="split")[0]
    assert split[2]["num_stages"] == stages
    assert arithmetic() == reference


def test_one_wave_sequential_launches_may_take_another_depth_not_other_arithmetic(monkeypatch):
    """attention_table.ATTENTION_ONE_WAVE_STAGES: a sequential launch of at most one program per SM (decode
    at batch 16: 128 programs) may run a deeper pipeline than the tile's; its arithmetic stays the
    tile's (only masked-load selects may differ), and launches of more programs keep the tile's."""
    cuda, tile = torch.device("cuda"), attention_table.attention_config(128, torch.bfloat16, interpreted=False)
    monkeypatch.setattr(_device, "gpu", lambda device: inspect_kernels.H100_PROPERTIES)
    monkeypatch.setattr(attention_table, "ATTENTION_ONE_WAVE_STAGES", 3)
    assert attention_table.attention_stages(tile, False, 128, cuda) == 3
    assert attention_table.attention_stages(tile, False, 133, cuda) == tile.num_stages  # more than one wave
    assert attention_table.attention_stages(tile, True, 128, cuda) == attention_table.attention_stages(tile, True)  # split: its own knob

    def arithmetic(stages):
        monkeypatch.setitem(attention_table._ATTENTION_CUDA_16BIT, 128, dataclasses.replace(tile, num_stages=stages))
        (call,) = inspect_kernels.attention_calls(16, 1, 4096, path="sequential")
        assert call[2]["num_stages"] == stages
        return [op for op in inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*call)) if not op.startswith("selp")]

    assert arithmetic(3) == arithmetic(tile.num_stages)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_residual_add_folded_into_the_row_sum_is_one_rounded_add(dtype):
    """reduction_table.REDUCTION_FOLD_RESIDUAL_ADD: the row kernel's only new arithmetic is the add itself,
    one packed add in the input dtype per element pair (IEEE round-to-nearest of the exact sum:
    what Inductor's fp32 add then cast to the 16-bit dtype stores); the squares and their order
    are the unfolded kernel's."""
    from inductor_bi.kernels import reduction

    rows, r = 64, 2048
    x, y = (torch.empty(rows, r, dtype=dtype, device="meta") for _ in range(2))
    out = torch.empty(rows, dtype=torch.float32, device="meta")
    cfg = reduction_table.reduction_config(r, dtype, torch.device("cuda"))

    def ops(add):
        options = dict(DIVIDE_BY_R=True, SQUARE=True, ADD=add, ACC=reduction.tl.float32, BLOCK_R=cfg.block_r, num_warps=cfg.num_warps)
        return inspect_kernels.float_ops(inspect_kernels.compile_for_h100(reduction._row_sum_kernel, (x, y, out, r), options))

    plain, folded = ops(False), ops(True)
    packed_add = f"add.{'bf16' if dtype == torch.bfloat16 else 'f16'}x2"
    assert packed_add in folded
    assert [op for op in folded if op != packed_add] == plain


@pytest.mark.parametrize("eps_from_pointer", [False, True], ids=["eps-argument", "eps-on-the-gpu"])
@pytest.mark.parametrize("r", [2048, 4096])
def test_fused_rms_norm_kernel_compiles_without_spills(r, eps_from_pointer):
    """reduction_table.REDUCTION_FUSE_RMS_NORM's row kernel (sum of squares of x + r, rsqrt, normalize,
    bf16 cast, weight) for Llama widths: no spills, one rsqrt a row, the residual sum stored;
    eps as a kernel argument (the custom op) or loaded from the GPU (an Inductor launch)."""
    from inductor_bi.kernels import reduction

    x, y, out, h = (torch.empty(64, r, dtype=torch.bfloat16, device="meta") for _ in range(4))
    eps = torch.empty((), dtype=torch.float32, device="meta") if eps_from_pointer else 1e-6
    w = torch.empty(r, dtype=torch.bfloat16, device="meta")
    cfg = reduction_table.reduction_config(r, torch.bfloat16, torch.device("cuda"))
    options = dict(ADD=True, HAS_WEIGHT=True, NORMALIZED_DTYPE=reduction.tl.bfloat16, EPS_FROM_POINTER=eps_from_pointer,
                   ACC=reduction.tl.float32, BLOCK_R=cfg.block_r, num_warps=cfg.num_warps)  # fmt: skip
    compiled = inspect_kernels.compile_for_h100(reduction._row_rms_normalize_kernel, (x, y, eps, w, out, h, r), options)
    info = inspect_kernels.resources(compiled)
    assert info["spill_stores"] == 0 and info["spill_loads"] == 0, info
    ops = inspect_kernels.float_ops(compiled)
    assert sum(op.startswith("rsqrt") for op in ops) == 1, ops
    assert compiled.asm["ptx"].count("st.global") >= 2  # h and the output


def test_cache_read_in_place_changes_no_arithmetic(monkeypatch):
    """kv_rows: the attention kernel reading each row's cache slot in place runs exactly the
    float ops of the kernel given the gathered cache (only the K/V base address differs)."""
    from inductor_bi.kernels import attention

    def split_calls(kv_rows):
        q = torch.empty(16, 32, 1, 128, dtype=torch.bfloat16, device="meta")
        cache = torch.empty(64 if kv_rows else 16, 8, 4096, 128, dtype=torch.bfloat16, device="meta")
        rows = torch.empty(16, dtype=torch.int64, device="meta") if kv_rows else None
        with inspect_kernels.recorded_launches() as calls:
            attention.fixed_split_attention(q, cache, cache, enable_gqa=True, path="split", kv_rows=rows)
        return calls

    for gathered, in_place in zip(split_calls(False), split_calls(True)):
        assert in_place[2].get("HAS_KV_ROWS") and not gathered[2].get("HAS_KV_ROWS")
        ops = [inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*call)) for call in (gathered, in_place)]
        assert ops[0] == ops[1]


def _batch_classes_calls():
    """Launches that differ only in the batch size, one launch shape each: matmuls at M = 1..64
    (short tile, not split: 64 tiles of N = 8192), split decode steps at batch 1 / 3 / 7 over 1000
    keys (two splits), causal prefills of 512 tokens at batch 1 / 2 / 5 (more than one program per
    SM: the tile's pipeline depth)."""
    matmuls = [call for m in (1, 7, 16, 33, 64) for call in inspect_kernels.matmul_calls(m, 8192, 2048)]
    decodes = [call for b in (1, 3, 7) for call in inspect_kernels.attention_calls(b, 1, 1000, path="split")]
    prefills = [call for b in (1, 2, 5) for call in inspect_kernels.attention_calls(b, 512, 512)]
    return {"matmul": matmuls, "decode": decodes, "prefill": prefills}


def _binaries(calls):
    return len({inspect_kernels.binary_key(*call) for call in calls})


def test_one_binary_serves_every_batch_size(monkeypatch):
    """Attention takes no size that follows the batch: one compiled binary per launch shape for
    every batch size. The matmul takes M: Triton compiles a variant per value class (== 1, a
    multiple of 16, neither), whose float ops the tests above compare; with
    matmul_table.ONE_BINARY_FOR_ANY_BATCH it takes M unspecialized and one binary serves them all."""
    calls = _batch_classes_calls()
    assert _binaries(calls["decode"]) == 1 and _binaries(calls["prefill"]) == 1
    monkeypatch.setattr(matmul_table, "ONE_BINARY_FOR_ANY_BATCH", False)
    assert _binaries(_batch_classes_calls()["matmul"]) == 3
    monkeypatch.setattr(matmul_table, "ONE_BINARY_FOR_ANY_BATCH", True)
    assert _binaries(_batch_classes_calls()["matmul"]) == 1


@pytest.mark.parametrize("m", [1, 64])
def test_the_one_matmul_binary_runs_the_specialized_binaries_float_ops(m, monkeypatch):
    """With M unspecialized the compiler knows less (no M == 1 constant, no alignment fact on M):
    the float ops must still be the specialized binary's, with no spills."""
    def compiled(one_binary):
        monkeypatch.setattr(matmul_table, "ONE_BINARY_FOR_ANY_BATCH", one_binary)
        (call,) = inspect_kernels.matmul_calls(m, 8192, 2048)
        return inspect_kernels.compile_for_h100(*call)

    one, specialized = compiled(True), compiled(False)
    assert inspect_kernels.float_ops(one) == inspect_kernels.float_ops(specialized)
    assert inspect_kernels.resources(one)["spill_stores"] == 0


def test_attention_fmas_are_the_written_ones_never_contracted():
    """FMA contraction is off in attention (the compiler could fuse a * b + c in one variant and
    not another); the kernel writes its fused multiply-adds with tl.fma (fma.rn.f32): prefill and
    split decode both have them (the step and the merges). The only other fmas are libdevice's
    log2 for the log-sum-exp (fma.rn.ftz.f32)."""
    def fmas():
        """Per kernel: (written fmas, libdevice's fmas); no other fma kind."""
        found = []
        for calls in (inspect_kernels.attention_calls(1, 1024, 1024), inspect_kernels.attention_calls(16, 1, 4096, path="split")):
            for call in calls:
                ops = [op for op in inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*call)) if op.startswith("fma.")]
                assert set(ops) <= {"fma.rn.f32", "fma.rn.ftz.f32"}, sorted(set(ops))
                found.append((ops.count("fma.rn.f32"), ops.count("fma.rn.ftz.f32")))
        return found

    found = fmas()
    assert all(written > 0 for written, _ in found), found


def _as_inductor_types_floats(kernel, args, kwargs, float_type: str):
    """``compile_for_h100`` with every Python-float argument typed ``float_type``: Triton's
    launcher passes them as fp32, Inductor's launches of user kernels as fp64."""
    signature, constexprs, attrs, options = inspect_kernels.specialization(kernel, args, kwargs)
    values = dict(zip(kernel.arg_names, args), **kwargs)
    floats = [n for n, kind in signature.items() if kind == "fp32" and isinstance(values.get(n), float)]
    signature.update({n: float_type for n in floats})
    compiled = inspect_kernels.triton.compile(
        inspect_kernels.ASTSource(kernel, signature, constexprs, attrs), target=inspect_kernels.H100, options=options
    )
    return floats, compiled


def _float_arg_calls():
    a = torch.empty(64, 512, dtype=torch.bfloat16, device="meta")
    w = torch.empty(512, 256, dtype=torch.bfloat16, device="meta")
    bias = torch.empty(256, dtype=torch.bfloat16, device="meta")
    with inspect_kernels.recorded_launches() as scaled:
        inspect_kernels.matmul.invariant_matmul(a, w, bias, 0.5, 3.0)  # beta * bias, alpha * (a @ w)
    return {
        "matmul": scaled,
        "reductions": inspect_kernels.reduction_calls(8, 1024),
        "attention": inspect_kernels.attention_calls(2, 64, 64),
    }


@pytest.mark.parametrize("family", ["matmul", "reductions", "attention"])
def test_float_arguments_passed_as_fp64_compile_to_the_fp32_arithmetic(family, monkeypatch):
    """A kernel Inductor launches gets its Python floats (scale, eps, divisor, alpha / beta) as
    fp64: it must compile (it did not: an fp64 scale reached tl.dot's fp32 accumulator) and,
    after rounding them to fp32 once (float_arg), run the fp32 launch's float ops."""
    monkeypatch.setattr(_device, "gpu", lambda device: inspect_kernels.H100_PROPERTIES)
    checked = 0
    for kernel, args, kwargs in _float_arg_calls()[family]:
        floats, as_fp32 = _as_inductor_types_floats(kernel, args, kwargs, "fp32")
        if not floats:
            continue
        _, as_fp64 = _as_inductor_types_floats(kernel, args, kwargs, "fp64")
        rounded = [op for op in inspect_kernels.float_ops(as_fp64) if not op.startswith("cvt.rn.f32.f64")]
        assert rounded == inspect_kernels.float_ops(as_fp32), (kernel.fn.__name__, floats)
        checked += 1
    assert checked, f"{family}: no launch with a float argument"
