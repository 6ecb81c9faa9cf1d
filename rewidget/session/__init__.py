"""The stateful, headless backends: RewriteSession (images) and TextRewriteSession (language
models); no widget imports."""

from .facts import Fact, FactRequest
from .session import RewriteSession
from .text import TextRewriteSession

__all__ = ["Fact", "FactRequest", "RewriteSession", "TextRewriteSession"]
