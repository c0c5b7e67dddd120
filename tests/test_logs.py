import logging

from app.logs import CallContextFilter, current_call, mask_phone


def test_mask_phone_keeps_prefix_and_last_digits_only():
    assert mask_phone("+33612345678") == "+336••••••78"
    assert mask_phone("") == "?"
    assert "12345" not in mask_phone("+33 6 12 34 56 78")


def test_log_records_carry_the_call_and_never_a_full_number():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "call from %s to +33198765432", ("+33612345678",), None)
    token = current_call.set("CA0123456789abcdef0123456789abcdef")
    try:
        assert CallContextFilter().filter(record)
    finally:
        current_call.reset(token)
    assert record.call == "CA0123456789abcdef0123456789abcdef"
    assert "612345678" not in record.msg and "198765432" not in record.msg
    assert "+336" in record.msg


def test_sids_with_long_digit_runs_are_not_mistaken_for_numbers():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "stream MZ12345678901234 for CA99999999aa", (), None)
    CallContextFilter().filter(record)
    assert record.msg == "stream MZ12345678901234 for CA99999999aa"
