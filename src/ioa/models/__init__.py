"""Model backends behind one `generate` interface, the persistent call cache, and model resolution."""

from ioa.models.base import ChatModel, ChatRequest, Generation, SamplingParams
from ioa.models.cache import CachedModel, CallCache

__all__ = ["CachedModel", "CallCache", "ChatModel", "ChatRequest", "Generation", "SamplingParams"]
