"""The stateful, headless backend: RewriteSession (no widget imports)."""

from .session import RewriteSession

__all__ = ["RewriteSession"]
