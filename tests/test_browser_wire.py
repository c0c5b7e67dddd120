"""The browser protocol's pure layer, and the access tokens."""

import json

import jwt
import pytest

from app.accounts.tokens import AccessTokens, TokenRefused
from app.channels.browser import wire


@pytest.mark.parametrize(("frame", "expected"), [
    ('{"type":"start_conversation"}', wire.StartConversation()),
    ('{"type":"user_audio_end"}', wire.UserAudioEnd()),
    ('{"type":"reset_session"}', wire.ResetSession()),
    ('{"type":"interrupt"}', wire.Interrupt()),
    ('{"type":"playback","samples":48000}', wire.Playback(48000)),
    ('{"type":"playback","samples":0}', wire.Playback(0)),
    ('{"type":"user_text","text":"  Quelle température pour la couveuse ?  "}',
     wire.UserText("Quelle température pour la couveuse ?")),
    (b"\x01\x00" * 480, b"\x01\x00" * 480),
])
def test_every_client_message_is_understood(frame, expected):
    assert wire.parse_client(frame) == expected


@pytest.mark.parametrize(("frame", "code"), [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_message"),
    ('{"kind":"start_conversation"}', "bad_message"),
    ('{"type":42}', "bad_message"),
    ('{"type":"hangup"}', "unknown_type"),
    ('{"type":"playback","samples":-1}', "bad_message"),
    ('{"type":"playback","samples":1.5}', "bad_message"),
    ('{"type":"playback","samples":true}', "bad_message"),
    ('{"type":"playback"}', "bad_message"),
    ('{"type":"user_text","text":"   "}', "bad_message"),
    ('{"type":"user_text","text":7}', "bad_message"),
    ('{"type":"user_text","text":"' + "a" * 2001 + '"}', "bad_message"),
    (b"", "bad_audio"),
    (b"\x00" * 961, "bad_audio"),
    (b"\x00" * (wire.MAX_AUDIO_BYTES + 2), "audio_too_large"),
    (b'{"type":"user_audio_end"}', "json_as_audio"),
    ('{"type":"user_text","text":"' + "a" * wire.MAX_CONTROL_CHARS + '"}', "message_too_large"),
])
def test_every_bad_frame_is_refused_with_its_code_and_a_french_message(frame, code):
    with pytest.raises(wire.WireError) as refused:
        wire.parse_client(frame)
    assert refused.value.code == code and str(refused.value)


def test_audio_that_happens_to_start_with_a_brace_is_still_audio():
    frame = b"{\x00" + b"\x10\x00" * 100
    assert wire.parse_client(frame) == frame


def test_the_sample_rate_parameter():
    assert wire.sample_rate(None) == 24000 and wire.sample_rate("") == 24000
    assert wire.sample_rate("16000") == 16000 and wire.sample_rate("24000") == 24000
    for bad in ("8000", "44100", "abc", "-16000"):
        with pytest.raises(wire.WireError):
            wire.sample_rate(bad)


def test_server_messages_are_the_seeds():
    assert json.loads(wire.READY) == {"type": "ready"}
    assert json.loads(wire.BOT_AUDIO_END) == {"type": "bot_audio_end"}
    assert json.loads(wire.transcript_delta("Bonjour « à » vous")) == {"type": "transcript_delta",
                                                                       "text": "Bonjour « à » vous"}
    assert json.loads(wire.error("Jeton manquant.", "unauthorized")) == {
        "type": "error", "message": "Jeton manquant.", "code": "unauthorized"}
    assert json.loads(wire.CLEAR_AUDIO) == {"type": "clear_audio"}
    assert json.loads(wire.ended("timeout")) == {"type": "ended", "reason": "timeout"}


# ------------------------------------------------------------------ tokens

KEY = b"k" * 32


def test_a_token_names_its_user_until_it_expires():
    now = [1_000_000.0]
    tokens = AccessTokens(KEY, lifetime_seconds=3600, clock=lambda: now[0])
    token = tokens.issue("marie")
    assert tokens.verify(token) == "marie"
    now[0] += 3599
    assert tokens.verify(token) == "marie"
    now[0] += 1
    with pytest.raises(TokenRefused, match="expiré"):
        tokens.verify(token)


def test_forged_foreign_and_malformed_tokens_are_refused():
    tokens = AccessTokens(KEY, lifetime_seconds=3600)
    claims = {"sub": "marie", "aud": "octi-web", "iat": 0, "exp": 4_000_000_000}
    cases = [
        None, "", "abc.def.ghi",
        jwt.encode(claims, b"another key" * 3, algorithm="HS256"),          # forged
        jwt.encode({**claims, "aud": "something-else"}, KEY, algorithm="HS256"),  # another audience
        jwt.encode({k: v for k, v in claims.items() if k != "exp"}, KEY, algorithm="HS256"),  # never expires
        jwt.encode({**claims, "sub": ""}, KEY, algorithm="HS256"),
        jwt.encode(claims, KEY * 2, algorithm="HS512"),                    # algorithm not allowed
        jwt.encode(claims, None, algorithm="none"),                           # unsigned
    ]
    for token in cases:
        with pytest.raises(TokenRefused):
            tokens.verify(token)


# ------------------------------------------------------------------ octi web


def test_octi_web_manages_users_and_issues_tokens_the_service_accepts(tmp_path, monkeypatch):
    from app.accounts.tokens import token_key
    from app.config import Settings
    from tests.cli_runner import run_octi

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("WEB_TOKEN_SECRET", raising=False)
    assert run_octi("web", "add-user", "Marie", "--stdin", input="poussins-2026\n").exit_code == 0
    again = run_octi("web", "add-user", "marie", "--stdin", input="poussins-2026\n")
    assert again.exit_code == 1 and "exists already" in again.stderr
    short = run_octi("web", "add-user", "paul", "--stdin", input="court\n")
    assert short.exit_code == 1 and "8 characters" in short.stderr
    listed = run_octi("web", "users")
    assert listed.stdout.startswith("marie\tactive\t")
    issued = run_octi("web", "token", "marie")
    assert issued.exit_code == 0
    service_side = AccessTokens(token_key(Settings(_env_file=None, data_dir=tmp_path)), lifetime_seconds=60)
    assert service_side.verify(issued.stdout.strip()) == "marie"
    assert run_octi("web", "disable-user", "marie").exit_code == 0
    refused = run_octi("web", "token", "marie")
    assert refused.exit_code == 1 and "no active user" in refused.stderr
    assert run_octi("web", "disable-user", "nobody").exit_code == 1
