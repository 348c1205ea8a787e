"""The collectives family's table (kernels/collectives.py): the all-reduce ops it serves. Pure data:
the graph passes read it to decide."""

SUMS = ("sum", "avg")
