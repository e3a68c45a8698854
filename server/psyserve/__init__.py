"""psyserve: an asyncio gRPC server for model-based adaptive experiments."""

__version__ = "0.1.0"
