class BatchInvarianceError(RuntimeError):
    """A reduction in the graph could not be made batch-invariant (see the message for the op and line)."""
