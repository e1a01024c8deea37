from agentwire.testing import runtime

__all__ = ["runtime"]
