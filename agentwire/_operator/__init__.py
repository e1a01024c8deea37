"""Operator edges: the command line for calls, publishes and status, and HTTP ingress."""
