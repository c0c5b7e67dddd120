"""A websocket double of OpenAI GPT-Live (`/v1/live/sessions`), beside the Realtime one: client
events validated strictly against `openai.types.live`, full duplex (it talks over a caller for a
while, then yields), client delegations with scripted questions, audio fixtures and usage.
`server` accepts the sessions, `connection` is one session, `command` is `octi live-double`."""

from app.simulators.live_double.command import cli
from app.simulators.live_double.connection import DELTA_MS, LiveConnection
from app.simulators.live_double.server import PATH, LiveDouble

__all__ = ["DELTA_MS", "PATH", "LiveConnection", "LiveDouble", "cli"]
