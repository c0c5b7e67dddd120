"""The call session: the agent's side of a conversation, whatever the channel."""
