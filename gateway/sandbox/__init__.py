"""The sandbox bank: token endpoint, DCR backend and test directory (never in production)."""

from .app import build_sandbox_app

__all__ = ["build_sandbox_app"]
