"""The runtime: the runtime object (``_core``), delivery, the pending map, the routers."""
