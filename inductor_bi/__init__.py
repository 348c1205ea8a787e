"""inductor_bi: a torch.compile backend that makes compiled models batch-invariant.

    torch.compile(model, backend="batch_invariant")

Every reduction (matmuls, norms, softmax, sums, attention) runs through a Triton kernel whose
accumulation order depends on the reduced extent and dtype only, never on the batch.
"""

from . import ops  # noqa: F401  (registers torch.ops.inductor_bi.*)
from .backend import batch_invariant, register_backend_name
from .errors import BatchInvarianceError
from .explain import ExplainReport, explain
from .options import Options

register_backend_name()

__all__ = ["BatchInvarianceError", "ExplainReport", "Options", "batch_invariant", "explain"]
