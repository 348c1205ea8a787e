"""Run one Triton kernel on CUDA tensors (compiled) or on CPU tensors (Triton's interpreter).

The CPU path exists so that every kernel can be tested without a GPU and so that a model compiled
with the backend still runs (slowly) on a CPU-only machine: it is a reference and test mode.

Kernels are ordinary ``@triton.jit`` functions; launch them through
``launch(kernel, grid, device, ...)`` so the device picks the runner. Without TRITON_INTERPRET=1,
``@triton.jit`` helpers (ours and triton.language's own, e.g. ``tl.cdiv``, ``tl.sum``) are compiled
objects that refuse to be called from Python; while an interpreted kernel runs, ``launch`` routes
such calls to the interpreter too.
"""

from __future__ import annotations

import contextlib
import functools
import types
import warnings

import torch
import triton
import triton.language as tl
import numpy as np  # the interpreter's values are numpy arrays (patched below); a declared dependency
from triton.runtime import interpreter as _interpreter
from triton.runtime.errors import OutOfResources
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from . import _device, matmul_table

_warned_cpu = False


@triton.jit
def float_arg(x):
    """A Python-float kernel argument as fp32. Triton's launcher passes Python floats as fp32,
    Inductor's (kernels it launches itself) as fp64: every kernel reads them through this, so
    both launches compute with the same fp32 value (fp64 -> fp32 rounds to nearest, as the
    launcher's conversion does)."""
    return tl.cast(x, tl.float32)


def _interpret_env() -> bool:
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # older triton
        import os

        return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _interpreted(fn):
    return InterpretedFunction(fn)


def uses_interpreter(device: torch.device) -> bool:
    return device.type != "cuda" or _interpret_env()


def tma_descriptor(t: torch.Tensor, box: list[int]):
    """A TMA descriptor of ``t`` as it lies in memory with ``box`` blocks, or None when its
    layout does not allow one (_device.tma_describable): the caller then uses pointer loads."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, list(t.shape), list(t.stride()), box) if _device.tma_describable(t) else None


# kernel -> its twin compiled with the sizes that follow the batch unspecialized
# (matmul_table.ONE_BINARY_FOR_ANY_BATCH).
_TWINS: dict[JITFunction, JITFunction] = {}


def sizes_follow_the_batch(*names: str):
    """Mark a kernel's integer arguments that follow the batch (the matmul's M): with
    matmul_table.ONE_BINARY_FOR_ANY_BATCH the kernel launches as a twin that takes them unspecialized
    (Triton's ``do_not_specialize``), one binary for every value."""

    def register(kernel: JITFunction) -> JITFunction:
        unknown = set(names) - set(kernel.arg_names)
        if unknown:
            raise TypeError(f"{kernel.fn.__name__} has no argument {sorted(unknown)}")
        _TWINS[kernel] = triton.jit(kernel.fn, do_not_specialize=list(names))
        return kernel

    return register


def binaries_compiled(kernel: JITFunction) -> int:
    """How many binaries Triton has compiled for ``kernel`` and its twin, on every device (the JIT
    caches): a launch shape's specializations each compile once."""
    return sum(len(cache[0]) for fn in {kernel, _TWINS.get(kernel, kernel)} for cache in fn.device_caches.values())


def compiled_kernel(kernel: JITFunction) -> JITFunction:
    """The JIT function a CUDA launch of ``kernel`` goes through (its twin when asked for)."""
    return _TWINS.get(kernel, kernel) if matmul_table.ONE_BINARY_FOR_ANY_BATCH else kernel


# (kernel, launch kwargs, argument dtypes, device) -> the pipeline depth that fit in shared memory.
_STAGES_THAT_FIT: dict = {}


def launch_with_stages_that_fit(kernel, grid, device: torch.device, args, kwargs):
    """``kernel[grid](*args, **kwargs)``; a pipeline deeper than this GPU's shared memory per block
    allows is launched one stage shallower until it fits (remembered per launch shape). Stages
    decide how many blocks are in flight, never the arithmetic (tests/test_kernels_sm90_codegen),
    so a GPU with less shared memory than the one the tiles were pinned on gets the same bits."""
    def shape_key():
        return (kernel, tuple(sorted((k, repr(v)) for k, v in kwargs.items())), tuple(str(getattr(a, "dtype", "")) for a in args), str(device))

    key = shape_key() if _STAGES_THAT_FIT else None  # nothing to look up until a launch did not fit
    if key in _STAGES_THAT_FIT:
        kwargs = {**kwargs, "num_stages": _STAGES_THAT_FIT[key]}
    while True:
        try:
            return compiled_kernel(kernel)[grid](*args, **kwargs)
        except OutOfResources as e:
            stages = kwargs.get("num_stages") or 0
            if e.name != "shared memory" or stages <= 1:
                raise
            key = key or shape_key()
            kwargs = {**kwargs, "num_stages": stages - 1}
            _STAGES_THAT_FIT[key] = stages - 1


_FOR_INDUCTOR = False


@contextlib.contextmanager
def launched_by_inductor():
    """Inside: a kernel launch is recorded (``wrap_triton``) into the graph being traced instead of
    run, so Inductor's generated code launches it (lowerings/); host-side choices read the size
    hints (``size_hint``), never guard on a size."""
    global _FOR_INDUCTOR
    previous, _FOR_INDUCTOR = _FOR_INDUCTOR, True
    try:
        yield
    finally:
        _FOR_INDUCTOR = previous


def tracing_for_inductor() -> bool:
    return _FOR_INDUCTOR


def size_hint(n) -> int:
    """A size as an int for a choice that only sets parallelism (never the arithmetic): a symbolic
    size gives its hint (the traced example's value) and installs no guard, so one compiled graph
    serves every batch size."""
    if isinstance(n, torch.SymInt):
        known = n.node.maybe_as_int()
        return known if known is not None else n.node.hint
    return int(n)


def runs_interpreted(device: torch.device) -> bool:
    """A launch on ``device`` runs in Triton's interpreter: never one Inductor makes (compiled CUDA)."""
    return uses_interpreter(device) and not tracing_for_inductor()


def dense_aligned(t: torch.Tensor, align: int) -> torch.Tensor:
    """``t`` contiguous at an address that is a multiple of ``align`` bytes, copied if needed: the
    pointer's alignment is part of the compiled variant (its register layout, so a reduction's
    tree). A fake tensor traced for Inductor has no address: Inductor compiles the aligned variant
    for a buffer whose offset is a known multiple of 16 bytes (and copies a misaligned input at run
    time), so anything else is copied, as an unaligned pointer is in a direct launch."""
    if tracing_for_inductor():
        from torch._prims_common import is_contiguous_or_false
        from torch.fx.experimental.symbolic_shapes import statically_known_true

        aligned = statically_known_true(t.storage_offset() * t.element_size() % align == 0)
        return t if is_contiguous_or_false(t) and aligned else t.clone(memory_format=torch.contiguous_format)
    if not t.is_contiguous() or t.data_ptr() % align:
        return t.clone(memory_format=torch.contiguous_format)
    return t


def launch(kernel, grid, device: torch.device, *args, **kwargs):
    """Launch ``kernel[grid](*args, **kwargs)`` compiled on CUDA, interpreted elsewhere; recorded
    for Inductor to launch inside ``launched_by_inductor``."""
    if _FOR_INDUCTOR:
        from torch._library.triton import wrap_triton

        return wrap_triton(compiled_kernel(kernel))[grid](*args, **kwargs)
    if not uses_interpreter(device):
        # Triton launches on the current device and stream: make them the tensors' device's (a
        # custom op called eagerly gets no device guard of its own).
        with torch.cuda.device(device):
            return launch_with_stages_that_fit(kernel, grid, device, args, kwargs)
    _warn_cpu_once(device)
    fn = kernel if isinstance(kernel, InterpretedFunction) else _interpreted(kernel.fn)
    # Launch options are compiler hints; the interpreter has no use for them.
    for hint in ("num_warps", "num_stages", "num_ctas", "maxnreg"):
        kwargs.pop(hint, None)
    with _jit_helpers_interpreted(), _position_invariant_dot(), _fused_fma():
        return fn[grid](*args, **kwargs)


@contextlib.contextmanager
def _jit_helpers_interpreted():
    """Let an interpreted kernel call ``@triton.jit`` helpers, ours and triton.language's own
    (``tl.zeros``, ``tl.sum``...): JITFunction.__call__ only raises.

    triton.language and triton.language.core are switched to the interpreter once for the
    launch, and put back after it; a helper then runs as the interpreter rewrote it. Not through
    ``InterpretedFunction.__call__``: in triton 3.6 that patches triton.language per call and never
    puts it back, so after one interpreted ``tl.zeros`` (whose module sees ``tl.core``) every
    later GPU compile in the process failed ("'ir.value' object has no attribute 'dtype'")."""
    original = JITFunction.__call__

    def call_interpreted(self, *args, **kwargs):
        return _interpreted(self.fn).rewrite()(*args, **kwargs)

    # _patch_lang reads only the modules a function's globals hold.
    scope = _interpreter._patch_lang(types.SimpleNamespace(__globals__={"tl": triton.language, "core": triton.language.core}))
    JITFunction.__call__ = call_interpreted
    try:
        yield
    finally:
        JITFunction.__call__ = original
        scope.restore()


@contextlib.contextmanager
def _builder_patched(name: str, make):
    """The interpreter's builder method ``name`` replaced by ``make(original)`` for one launch,
    then put back."""
    builder = _interpreter.interpreter_builder
    original = getattr(builder, name)
    setattr(builder, name, make(original))
    try:
        yield
    finally:
        setattr(builder, name, original)


def _position_invariant_dot():
    """Make the interpreter's ``tl.dot`` give each output element the same arithmetic wherever it
    sits in the tile.

    The interpreter implements ``tl.dot`` as one ``np.matmul``, i.e. a BLAS call whose
    micro-kernels treat edge rows differently (FMA in one, mul + add in another): the same row
    got different bits at tile position 7 than at position 0. Products followed by a sum over K
    in ascending order are the same operations for every element.
    """
    def make(original):
        def create_dot(a, b, d, input_precision, max_num_imprecise_acc):
            if a.data.ndim != 2:
                return original(a, b, d, input_precision, max_num_imprecise_acc)
            acc = d.data.dtype
            products = a.data.astype(acc)[:, :, None] * b.data.astype(acc)[None, :, :]
            out = np.zeros_like(d.data)
            for k in range(products.shape[1]):  # ascending K, one rounding per add
                out = out + products[:, k, :]
            return _interpreter.TensorHandle(out + d.data, d.dtype.scalar)

        return create_dot

    return _builder_patched("create_dot", make)


def _fused_fma():
    """Make the interpreter's ``tl.fma`` on fp32 round once, as the GPU's fma.rn does.

    The interpreter computes ``x * y + z`` in the operands' dtype, two roundings: a kernel that
    writes fma where another path writes mul and add would agree with it on the CPU and not on the
    GPU. Here fp32 operands go through float64: the product is exact there, and the sum is
    rounded to fp32 after one float64 rounding (the two can differ from one fp32 rounding only
    on ties of that second rounding, identically on every path)."""
    def make(original):
        def create_fma(x, y, z):
            if not (x.data.dtype == y.data.dtype == z.data.dtype == np.float32):
                return original(x, y, z)
            fused = x.data.astype(np.float64) * y.data.astype(np.float64) + z.data.astype(np.float64)
            return _interpreter.TensorHandle(fused.astype(np.float32), z.dtype.scalar)

        return create_fma

    return _builder_patched("create_fma", make)


def _warn_cpu_once(device: torch.device) -> None:
    global _warned_cpu
    if _warned_cpu or device.type == "cuda":
        return
    _warned_cpu = True
    warnings.warn(
        "inductor_bi: running batch-invariant Triton kernels on the CPU through Triton's "
        "interpreter. Results are exact and invariant, but slow: this is a reference and "
        "test mode. Use CUDA tensors for speed.",
        stacklevel=3,
    )


def interpreter_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel computes in on the interpreter.

    Triton 3.6's interpreter mishandles bfloat16 (garbage or errors), so bf16 inputs are upcast to
    fp32 there (exact: every bf16 value is an fp32 value) and the result is cast back. The GPU runs
    bf16 natively.
    """
    return torch.float32 if dtype == torch.bfloat16 else dtype
