import threading
from concurrent.futures import ThreadPoolExecutor

from twilio.request_validator import RequestValidator

from app.config import Settings, kept_secret
from app.channels.twilio.security import SignatureChecker, StreamTokens, public_url, websocket_url

TOKEN = "0123456789abcdef0123456789abcdef"


def settings(**overrides) -> Settings:
    values = {"twilio_auth_token": TOKEN, "public_base_url": "https://octi.example.org/", "host": "0.0.0.0"}
    values.update(overrides)
    return Settings(_env_file=None, **values)


def test_urls_come_from_the_public_base_url_not_the_host():
    s = settings()
    assert public_url(s, "/voice/incoming") == "https://octi.example.org/voice/incoming"
    assert websocket_url(s, "/voice/stream") == "wss://octi.example.org/voice/stream"


def test_webhook_signature_computed_by_twilio_is_accepted_and_tampering_refused():
    s = settings()
    params = {"CallSid": "CA1", "From": "+33612345678", "To": "+33198765432"}
    url = public_url(s, "/voice/incoming")
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    checker = SignatureChecker(s)
    assert checker.valid(url, params, signature)
    assert not checker.valid(url, {**params, "From": "+33700000000"}, signature)
    assert not checker.valid(url, params, RequestValidator("another-token").compute_signature(url, params))
    assert not checker.valid(url, params, None)


def test_websocket_signature_is_over_the_wss_url_with_empty_params():
    s = settings()
    wss = websocket_url(s, "/voice/stream")
    signature = RequestValidator(TOKEN).compute_signature(wss, {})
    checker = SignatureChecker(s)
    assert checker.valid(wss, {}, signature)
    assert not checker.valid("https://octi.example.org/voice/stream", {}, signature)


def test_without_a_token_only_a_loopback_server_accepts_unsigned_requests():
    assert SignatureChecker(settings(twilio_auth_token=None, host="127.0.0.1")).valid("http://x/", {}, None)
    refusing = SignatureChecker(settings(twilio_auth_token=None, host="0.0.0.0"))
    assert refusing.refuses_everything and not refusing.valid("http://x/", {}, None)


def test_stream_tokens_bind_the_call_and_expire():
    tokens = StreamTokens(settings(stream_token_ttl_seconds=60))
    token = tokens.issue("CA1", now=1000)
    assert tokens.check("CA1", token, now=1030)
    assert not tokens.check("CA2", token, now=1030)          # replayed for another call
    assert not tokens.check("CA1", token, now=1061)          # expired
    assert not tokens.check("CA1", token.replace(".", ".0"), now=1030)
    assert not tokens.check("CA1", None)
    assert StreamTokens(settings()).check("CA1", StreamTokens(settings()).issue("CA1"))  # workers agree


def test_without_an_auth_token_workers_sharing_data_dir_agree_on_stream_tokens(tmp_path):
    def tokens(data_dir):
        return StreamTokens(settings(twilio_auth_token=None, host="127.0.0.1", data_dir=data_dir))

    issued = tokens(tmp_path / "a").issue("CA1")
    assert tokens(tmp_path / "a").check("CA1", issued)       # another worker, same DATA_DIR
    assert not tokens(tmp_path / "b").check("CA1", issued)   # another installation


def test_workers_starting_together_keep_one_secret(tmp_path):
    start = threading.Barrier(8)

    def read_secret(_):
        start.wait()
        return kept_secret(tmp_path / "data", "shared")

    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(read_secret, range(8)))
    assert len(secrets) == 1 and len(secrets.pop()) == 32
    assert [path.name for path in (tmp_path / "data").iterdir()] == ["shared"]
