"""Where workers run: the channel to a worker (``channel``), what it is asked to be (``job``, a versioned format),
the contracts (``base``), fresh processes on this machine (``local``) with their allocator policy (``allocator``),
and the nodes of a Ray cluster (``ray``)."""
