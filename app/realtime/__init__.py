"""The OpenAI Realtime API (GA protocol): event builders, the connection, pre-warming."""
