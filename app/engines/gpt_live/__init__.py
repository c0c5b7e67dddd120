"""OpenAI GPT-Live (`wss://…/v1/live/sessions`): a full-duplex model that takes its own turns and
delegates its questions to us (`protocol` builds what we send, `translator` reads what the
service sends, `engine` runs it on the engine contract)."""
