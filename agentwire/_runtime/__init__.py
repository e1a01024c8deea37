"""The runtime: the core (``_core``), the pending map, the local and worker routers."""
