"""The browser channel: the seed backend's `/ws/realtime` protocol (also served as `/ws/voice`)."""
