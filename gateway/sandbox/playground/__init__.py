"""The playground: a web page on the sandbox that walks a TPP developer through the DCR flow (sandbox only)."""

from .routes import PLAYGROUND, Playground, add_routes

__all__ = ["PLAYGROUND", "Playground", "add_routes"]
