"""The OpenAI Realtime API (GA protocol) as an engine: event builders, the connection, the engine."""
