"""The gRPC worker: ``open_worker``, its gateway link, its sessions and their outbox."""
