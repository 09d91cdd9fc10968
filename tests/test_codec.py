"""The payload codec (AES-256-GCM), its settings and ``fsmflow codec-server``,
with real HTTP (urllib) and the real command in a subprocess."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from schemas.workflow import MessageInput
from tests.conftest import ROOT, free_port
from workers.cli import main
from workers.codec import (
    EncryptionCodec,
    KeyRing,
    PayloadDecryptionError,
    PayloadKey,
    PayloadKeyError,
    data_converter,
    parse_key,
    parse_keys,
)
from workers.codec_server import CodecServer
from workers.settings import Settings

K0 = PayloadKey("k0", bytes(range(32)))
K1 = PayloadKey("k1", os.urandom(32))
K2 = PayloadKey("k2", os.urandom(32))
UI = "http://ui.test:8233"


def ring(current: PayloadKey, *decrypt_only: PayloadKey) -> KeyRing:
    return KeyRing(current=current, decrypt_only=decrypt_only)


def spec(key: PayloadKey) -> str:
    return f"{key.key_id}:{base64.b64encode(key.key).decode()}"


async def plain_payloads(*values: Any) -> list[Payload]:
    return await pydantic_data_converter.encode(list(values))


# ---------------------------------------------------------------- the codec


async def test_round_trip_hides_data_and_metadata() -> None:
    converter = data_converter(ring(K1))
    message = MessageInput(text="my pin is 4711, call me Zephyrine")
    [payload] = await converter.encode([message])
    assert payload.metadata["encoding"] == b"binary/encrypted"
    assert payload.metadata["encryption-key-id"] == b"k1"
    assert set(payload.metadata) == {"encoding", "encryption-key-id"}
    raw = payload.SerializeToString()
    assert b"Zephyrine" not in raw and b"4711" not in raw and b"json/plain" not in raw
    [back] = await converter.decode([payload], [MessageInput])
    assert back == message
    # Two encodings of one value differ (a fresh nonce each time).
    [again] = await converter.encode([message])
    assert again.data != payload.data


async def test_layout_is_the_temporal_samples_one() -> None:
    # nonce (12 bytes) || AES-GCM(serialized payload), no associated data: the
    # samples' codecs (Python, Go, TypeScript) decode it with the same key.
    [original] = await plain_payloads({"a": 1})
    [encrypted] = await EncryptionCodec(ring(K1)).encode([original])
    plain = AESGCM(K1.key).decrypt(encrypted.data[:12], encrypted.data[12:], None)
    assert Payload.FromString(plain) == original


async def test_rotation_new_key_encrypts_old_keys_decrypt() -> None:
    [original] = await plain_payloads("written before the rotation")
    [old] = await EncryptionCodec(ring(K1)).encode([original])
    rotated = EncryptionCodec(ring(K2, K1, K0))
    assert rotated.key_id == "k2" and rotated.key_ids == ["k2", "k1", "k0"]
    [new] = await rotated.encode([original])
    assert new.metadata["encryption-key-id"] == b"k2"
    assert await rotated.decode([old, new]) == [original, original]
    # Without the old key, the old payload names the key it needs.
    with pytest.raises(PayloadDecryptionError) as error:
        await EncryptionCodec(ring(K2)).decode([old])
    assert str(error.value) == (
        "payload encrypted with key 'k1', which is not configured (configured: k2); "
        "add it to FSMFLOW_PAYLOAD_DECRYPT_KEYS"
    )


async def test_a_key_rolling_out_decrypts_before_it_encrypts() -> None:
    # Step one of turning encryption on (or of a rotation): every process gets the
    # key as a decrypt key, so none fails on what the first encrypting one writes.
    rolling_out = parse_keys(None, spec(K1))
    assert rolling_out == KeyRing(decrypt_only=(K1,))
    codec = EncryptionCodec(rolling_out)
    assert codec.key_id is None
    originals = await plain_payloads("still written in clear")
    assert await codec.encode(originals) == originals
    encrypted = await EncryptionCodec(ring(K1)).encode(originals)
    assert await codec.decode(encrypted) == originals
    converter = data_converter(rolling_out)
    assert converter.payload_codec is not None
    assert type(converter.failure_converter) is type(pydantic_data_converter.failure_converter)


async def test_tampered_payloads_fail_authentication() -> None:
    codec = EncryptionCodec(ring(K1, K2))
    [original] = await plain_payloads("pay 10 EUR")
    [sealed] = await codec.encode([original])
    flipped = bytearray(sealed.data)
    flipped[20] ^= 0x01
    tampered = Payload(metadata=dict(sealed.metadata), data=bytes(flipped))
    with pytest.raises(PayloadDecryptionError, match="key 'k1' fails authentication"):
        await codec.decode([tampered])
    # Another configured key under the payload's id does not open it either.
    relabelled = Payload(metadata={**sealed.metadata, "encryption-key-id": b"k2"}, data=sealed.data)
    with pytest.raises(PayloadDecryptionError, match="key 'k2' fails authentication"):
        await codec.decode([relabelled])
    truncated = Payload(metadata=dict(sealed.metadata), data=sealed.data[:10])
    with pytest.raises(PayloadDecryptionError, match="too short"):
        await codec.decode([truncated])


async def test_unencrypted_payloads_pass_through() -> None:
    # Runs started before the codec was turned on keep working.
    before = await plain_payloads(MessageInput(text="hello"), None, {"k": [1, 2]})
    assert await EncryptionCodec(ring(K1)).decode(before) == before
    values = await data_converter(ring(K1)).decode(before, [MessageInput, type(None), dict])
    assert values == [MessageInput(text="hello"), None, {"k": [1, 2]}]


async def test_failure_messages_are_encrypted_too() -> None:
    converter = data_converter(ring(K1))
    failure = Failure()
    await converter.encode_failure(
        ApplicationError("tool 'lookup' raised: no account for pin 4711", type="ToolFailed"),
        failure,
    )
    assert b"4711" not in failure.SerializeToString()
    assert failure.message == "Encoded failure"
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert decoded.message == "tool 'lookup' raised: no account for pin 4711"
    assert decoded.type == "ToolFailed"


def test_no_keys_is_the_plain_pydantic_converter() -> None:
    assert data_converter(KeyRing()) is pydantic_data_converter
    with pytest.raises(ValueError, match="at least one key"):
        EncryptionCodec(KeyRing())
    with pytest.raises(ValueError, match="unique"):
        EncryptionCodec(ring(K1, PayloadKey("k1", K2.key)))


# ---------------------------------------------------------------- key settings


def test_key_format() -> None:
    assert parse_key(spec(K1), variable="X") == K1
    urlsafe = base64.urlsafe_b64encode(K0.key).decode()
    assert parse_key(f" k0 : {urlsafe} ", variable="X") == K0
    assert parse_keys(spec(K2), f"{spec(K1)}, {spec(K0)},") == ring(K2, K1, K0)
    assert parse_keys(None, None) == KeyRing() and parse_keys("  ", "") == KeyRing()
    assert not KeyRing() and ring(K1).keys == (K1,)
    assert "key=" not in repr(K1) and K1.key.hex() not in repr(K1)


@pytest.mark.parametrize(
    ("current", "old", "message"),
    [
        (base64.b64encode(K1.key).decode(), None, "FSMFLOW_PAYLOAD_KEY: expected <id>:<base64"),
        (f"k 1:{base64.b64encode(K1.key).decode()}", None, "FSMFLOW_PAYLOAD_KEY: the key id"),
        ("k1:not base64!", None, "FSMFLOW_PAYLOAD_KEY: key 'k1' is not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", None, "has 5 bytes; AES-256 needs 32"),
        (spec(K2), "k1:no?pe", "FSMFLOW_PAYLOAD_DECRYPT_KEYS: key 'k1' is not valid base64"),
        (spec(K2), f"{spec(K1)},{spec(PayloadKey('k1', K0.key))}", "'k1' is given twice"),
        (spec(K2), spec(PayloadKey("k2", K0.key)), "'k2' is given twice"),
    ],
    ids=[
        "no-id",
        "bad-id",
        "not-base64",
        "short",
        "decrypt-key-not-base64",
        "decrypt-key-ids-repeat",
        "decrypt-key-id-is-current",
    ],
)
def test_invalid_keys_are_one_line_errors(
    current: str | None, old: str | None, message: str
) -> None:
    with pytest.raises(PayloadKeyError) as error:
        parse_keys(current, old)
    text = str(error.value)
    assert message in text and "\n" not in text
    for key in (K0, K1, K2):
        assert base64.b64encode(key.key).decode() not in text


def test_settings_read_the_keys_and_never_show_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMFLOW_PAYLOAD_KEY", spec(K2))
    monkeypatch.setenv("FSMFLOW_PAYLOAD_DECRYPT_KEYS", f"{spec(K1)},{spec(K0)}")
    settings = Settings.load(environ={})
    assert settings.payload_keys() == ring(K2, K1, K0)
    summary = settings.safe_summary()
    assert summary["payload_key"] == "set (id k2)"
    assert summary["payload_decrypt_keys"] == "set (id k1, k0)"
    shown = json.dumps(summary) + repr(settings) + str(settings)
    for key in (K0, K1, K2):
        assert base64.b64encode(key.key).decode() not in shown
    monkeypatch.delenv("FSMFLOW_PAYLOAD_KEY")
    monkeypatch.delenv("FSMFLOW_PAYLOAD_DECRYPT_KEYS")
    unset = Settings.load(environ={})
    assert unset.payload_keys() == KeyRing()
    assert unset.safe_summary()["payload_key"] == "unset"


def test_invalid_key_stops_every_command_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    material = base64.b64encode(b"sixteen byte key").decode()
    monkeypatch.setenv("FSMFLOW_PAYLOAD_KEY", f"k1:{material}")
    for argv in (["worker"], ["status", "some-run"], ["codec-server"]):
        out, err = io.StringIO(), io.StringIO()
        assert main(argv, out=out, err=err) == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1, err.getvalue()
        assert "FSMFLOW_PAYLOAD_KEY: key 'k1' has 16 bytes; AES-256 needs 32" in lines[0]
        assert material not in err.getvalue()
    monkeypatch.delenv("FSMFLOW_PAYLOAD_KEY")
    err = io.StringIO()
    assert main(["codec-server"], out=io.StringIO(), err=err) == 2
    assert err.getvalue() == (
        "fsmflow codec-server: neither FSMFLOW_PAYLOAD_KEY nor FSMFLOW_PAYLOAD_DECRYPT_KEYS "
        "is set: nothing to decode\n"
    )


# ---------------------------------------------------------------- the codec server


@pytest.fixture
def codec_server() -> Iterator[CodecServer]:
    server = CodecServer(
        EncryptionCodec(ring(K2, K1)), port=free_port(), origins=(UI,), log_requests=False
    ).start()
    yield server
    server.stop()


def post(
    url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def as_json(payloads: list[Payload]) -> bytes:
    return json_format.MessageToJson(Payloads(payloads=payloads)).encode()


def from_json(body: bytes) -> list[Payload]:
    return list(json_format.Parse(body, Payloads()).payloads)


async def test_encode_then_decode_over_http(codec_server: CodecServer) -> None:
    originals = await plain_payloads(MessageInput(text="Zephyrine"), {"pin": "4711"})
    status, headers, body = post(
        codec_server.url + "/encode", as_json(originals), {"Origin": UI, "X-Namespace": "default"}
    )
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == UI
    encrypted = from_json(body)
    assert [p.metadata["encryption-key-id"] for p in encrypted] == [b"k2", b"k2"]
    assert b"Zephyrine" not in body and b"4711" not in body
    # Only the last path segment counts (endpoints may be mounted per namespace).
    status, _, body = post(codec_server.url + "/default/decode", as_json(encrypted))
    assert status == 200 and from_json(body) == originals
    # What the workers wrote decodes the same way (an old key too), plain payloads pass.
    [by_worker] = await data_converter(ring(K1)).encode(["written by a worker"])
    status, _, body = post(codec_server.url + "/decode", as_json([by_worker, originals[0]]))
    assert status == 200
    decoded = from_json(body)
    assert await pydantic_data_converter.decode(decoded, [str, MessageInput]) == [
        "written by a worker",
        MessageInput(text="Zephyrine"),
    ]


def test_cors_preflight(codec_server: CodecServer) -> None:
    def preflight(origin: str) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(
            codec_server.url + "/decode",
            method="OPTIONS",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)

    status, headers = preflight(UI)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == UI
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = headers["Access-Control-Allow-Headers"].split(",")
    assert {"content-type", "x-namespace", "authorization"} <= set(allowed)
    # Another site's pages get no CORS grant: the browser blocks their calls.
    status, headers = preflight("http://evil.test")
    assert status == 204 and "Access-Control-Allow-Origin" not in headers


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'{"payloads": [{"data": 5}]}', b'{"bogus": 1}', b"\xff\xfe"],
)
def test_malformed_bodies_are_400_without_a_traceback(
    codec_server: CodecServer, body: bytes
) -> None:
    status, headers, answer = post(codec_server.url + "/decode", body, {"Origin": UI})
    assert status == 400, answer
    text = answer.decode()
    assert text.startswith("the body is not a Payloads message in protobuf JSON")
    assert text.count("\n") == 1 and "Traceback" not in text
    assert headers["Access-Control-Allow-Origin"] == UI  # the UI can show the reason


async def test_undecryptable_payloads_and_other_paths(codec_server: CodecServer) -> None:
    [foreign] = await EncryptionCodec(ring(K0)).encode(await plain_payloads("x"))
    status, _, answer = post(codec_server.url + "/decode", as_json([foreign]))
    assert status == 400
    assert answer.decode().startswith("payload encrypted with key 'k0', which is not configured")
    status, _, _ = post(codec_server.url + "/other", b"{}")
    assert status == 404


async def test_bearer_token() -> None:
    server = CodecServer(
        EncryptionCodec(ring(K1)),
        port=free_port(),
        origins=(UI,),
        token="s3cret",
        log_requests=False,
    ).start()
    try:
        body = as_json(await plain_payloads("x"))
        assert post(server.url + "/encode", body)[0] == 401
        assert post(server.url + "/encode", body, {"Authorization": "Bearer wrong"})[0] == 401
        assert post(server.url + "/encode", body, {"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        server.stop()


async def test_fsmflow_codec_server_command() -> None:
    port = free_port()
    environment = {
        **os.environ,
        "FSMFLOW_PAYLOAD_KEY": spec(K2),
        "FSMFLOW_PAYLOAD_DECRYPT_KEYS": spec(K1),
        "FSMFLOW_UI_URL": UI + "/namespaces/default",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "codec-server",
        "--port",
        str(port),
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert first == (
            f"codec server on http://127.0.0.1:{port} (POST /encode, /decode); "
            f"keys k2 (encrypts), k1; Web UI origins {UI}\n"
        )
        [old] = await data_converter(ring(K1)).encode(["from before the rotation"])
        status, headers, body = await asyncio.to_thread(
            post, f"http://127.0.0.1:{port}/decode", as_json([old]), {"Origin": UI}
        )
        assert status == 200 and headers["Access-Control-Allow-Origin"] == UI
        assert await pydantic_data_converter.decode(from_json(body), [str]) == [
            "from before the rotation"
        ]
    finally:
        process.terminate()
        await process.wait()
    assert process.stderr is not None
    logged = (await process.stderr.read()).decode()
    assert '"POST /decode HTTP/1.1" 200' in logged
    assert base64.b64encode(K2.key).decode() not in logged
