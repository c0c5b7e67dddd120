import xml.etree.ElementTree as ET

from app.channels.twilio import twiml


def test_connect_stream_escapes_values_and_carries_the_parameters():
    doc = ET.fromstring(twiml.connect_stream(
        stream_url="wss://h/voice/stream", status_url="https://h/voice/status", action_url="https://h/voice/stream-ended",
        token='1.ab"<&', call_sid="CA1", caller="+33612345678", called="+33198765432"))
    connect = doc.find("Connect")
    stream = connect.find("Stream")
    assert connect.get("action") == "https://h/voice/stream-ended"
    assert stream.get("url") == "wss://h/voice/stream" and stream.get("statusCallback") == "https://h/voice/status"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"token": '1.ab"<&', "callSid": "CA1", "from": "+33612345678", "to": "+33198765432",
                      "direction": "inbound", "question": ""}
    assert doc.find("Hangup") is not None


def test_a_call_back_s_stream_carries_its_direction_and_question():
    doc = ET.fromstring(twiml.connect_stream(
        stream_url="wss://h/voice/stream", status_url="https://h/voice/status", action_url="https://h/voice/stream-ended",
        token="1.ab", call_sid="CA1", caller="+33612345678", called="+33198765432",
        call_back='Mes poules "pondent" <moins>'))
    params = {p.get("name"): p.get("value") for p in doc.find("Connect").find("Stream").findall("Parameter")}
    assert (params["direction"], params["question"]) == ("outbound", 'Mes poules "pondent" <moins>')


def test_spoken_documents_are_french_and_hang_up():
    for document in (twiml.unavailable(), twiml.refused("busy")):
        doc = ET.fromstring(document)
        say = doc.find("Say")
        assert say.get("language") == "fr-FR" and "rappeler" in say.text
        assert doc.find("Hangup") is not None
    voicemail = ET.fromstring(twiml.render("voicemail", message="Laissez votre question.", action_url="https://h/v"))
    assert [child.tag for child in voicemail] == ["Say", "Record", "Say", "Hangup"]
    assert voicemail.find("Record").get("action") == "https://h/v"
    assert all(say.get("language") == "fr-FR" for say in voicemail.findall("Say"))
    assert ET.fromstring(twiml.hangup()).find("Hangup") is not None
