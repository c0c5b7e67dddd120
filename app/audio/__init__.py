"""Audio formats and conversions between the caller's channel and the model."""
