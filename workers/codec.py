"""Payload encryption: workflow histories unreadable without fsmflow's key.

An optional Temporal payload codec (AES-256-GCM) that every client and worker gets
through ``workers.client.connect`` when ``FSMFLOW_PAYLOAD_KEY`` is set. Each
payload becomes a new payload with metadata ``encoding: binary/encrypted`` and
``encryption-key-id: <id>``, and data ``nonce || ciphertext`` of the original
payload serialized whole, so its metadata (encoding, message type) is hidden too.
The layout is the one of Temporal's encryption samples (Python, Go, TypeScript),
so their codec servers can decode fsmflow's payloads with the same key.

Keys rotate: one key encrypts, every configured key decrypts (chosen by the id
in the payload). Payloads without the encrypted encoding pass through, so runs
started before the codec was turned on keep working.

Keys are written ``<id>:<base64 of 32 bytes>``: ``FSMFLOW_PAYLOAD_KEY`` encrypts,
``FSMFLOW_PAYLOAD_DECRYPT_KEYS`` (comma-separated) only decrypt: older keys, or a
new key handed to every process before it starts encrypting (docs/codec.md).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
CURRENT_KEY_VARIABLE = "FSMFLOW_PAYLOAD_KEY"
DECRYPT_KEYS_VARIABLE = "FSMFLOW_PAYLOAD_DECRYPT_KEYS"

KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PayloadKeyError(ValueError):
    """Key material in the settings is not usable; the message names the variable."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload cannot be decrypted with the configured keys."""


@dataclass(frozen=True)
class PayloadKey:
    """One AES-256 key and the id that payloads encrypted with it carry (not secret)."""

    key_id: str
    key: bytes = field(repr=False)


def parse_key(spec: str, *, variable: str) -> PayloadKey:
    """A key written ``<id>:<base64 of 32 bytes>``.

    Raises:
        PayloadKeyError: If the text is not of that form; the message names
            ``variable`` and never holds the key material.
    """
    key_id, sep, material = spec.strip().partition(":")
    key_id = key_id.strip()
    if not sep:
        raise PayloadKeyError(
            f"{variable}: expected <id>:<base64 of {KEY_BYTES} bytes>, e.g. "
            f"k1:$(openssl rand -base64 {KEY_BYTES}); found no ':'"
        )
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise PayloadKeyError(
            f"{variable}: the key id before ':' must be 1 to 64 of A-Z a-z 0-9 . _ -"
        )
    try:
        # Standard or URL-safe alphabet; padding required (44 characters for 32 bytes).
        key = base64.b64decode(material.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise PayloadKeyError(
            f"{variable}: key {key_id!r} is not valid base64 (expected {KEY_BYTES} bytes, "
            f"e.g. from `openssl rand -base64 {KEY_BYTES}`)"
        ) from None
    if len(key) != KEY_BYTES:
        raise PayloadKeyError(
            f"{variable}: key {key_id!r} has {len(key)} bytes; AES-256 needs {KEY_BYTES}"
        )
    return PayloadKey(key_id=key_id, key=key)


@dataclass(frozen=True)
class KeyRing:
    """The configured keys: ``current`` encrypts (None: nothing is encrypted), all decrypt."""

    current: PayloadKey | None = None
    decrypt_only: tuple[PayloadKey, ...] = ()

    @property
    def keys(self) -> tuple[PayloadKey, ...]:
        """Every key, the one that encrypts first."""
        return ((self.current,) if self.current else ()) + self.decrypt_only

    def __bool__(self) -> bool:
        return bool(self.keys)


def parse_keys(current: str | None, decrypt_only: str | None = None) -> KeyRing:
    """The keys of ``FSMFLOW_PAYLOAD_KEY`` and ``FSMFLOW_PAYLOAD_DECRYPT_KEYS``.

    Args:
        current: The key that encrypts (and decrypts), ``<id>:<base64>``.
        decrypt_only: Comma-separated keys that only decrypt: older keys, or a
            new key being rolled out before it encrypts.

    Raises:
        PayloadKeyError: If a key is malformed or an id repeats; the message
            names the variable and never holds key material.
    """
    current = (current or "").strip()
    ring = KeyRing(current=parse_key(current, variable=CURRENT_KEY_VARIABLE) if current else None)
    for spec in (part for part in (decrypt_only or "").split(",") if part.strip()):
        key = parse_key(spec, variable=DECRYPT_KEYS_VARIABLE)
        if any(known.key_id == key.key_id for known in ring.keys):
            raise PayloadKeyError(
                f"{DECRYPT_KEYS_VARIABLE}: key id {key.key_id!r} is given twice; "
                "each key needs its own id"
            )
        ring = KeyRing(current=ring.current, decrypt_only=(*ring.decrypt_only, key))
    return ring


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM of whole payloads: the ring's current key encrypts, all keys decrypt.

    Without a current key (a key being rolled out) payloads are written as they
    are and encrypted ones are still read.
    """

    def __init__(self, ring: KeyRing) -> None:
        """Encrypt with ``ring.current``; decrypt with whichever key a payload names.

        Raises:
            ValueError: If the ring is empty or two keys share an id.
        """
        if not ring:
            raise ValueError("an encryption codec needs at least one key")
        ids = [key.key_id for key in ring.keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"key ids must be unique: {', '.join(ids)}")
        self.key_id = ring.current.key_id if ring.current else None
        self._ciphers = {key.key_id: AESGCM(key.key) for key in ring.keys}

    @property
    def key_ids(self) -> list[str]:
        """The configured key ids, the one that encrypts (if any) first."""
        return list(self._ciphers)

    def encrypt(self, payload: Payload) -> Payload:
        """One payload encrypted whole with the current key (as it is without one)."""
        if self.key_id is None:
            return payload
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.key_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        """The original of an encrypted payload; any other payload as it is.

        Raises:
            PayloadDecryptionError: If the payload names a key that is not
                configured, or fails authentication (tampered, or another key
                under the same id).
        """
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode("utf-8", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload encrypted with key {key_id!r}, which is not configured "
                f"(configured: {', '.join(self._ciphers)}); add it to {DECRYPT_KEYS_VARIABLE}"
            )
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise PayloadDecryptionError(
                f"payload encrypted with key {key_id!r} is too short to be a ciphertext"
            )
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload encrypted with key {key_id!r} fails authentication: "
                "it was altered, or another key carries that id"
            ) from None
        return Payload.FromString(plain)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt every payload (with a current key)."""
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt encrypted payloads; pass the others through."""
        return [self.decrypt(p) for p in payloads]


def data_converter(ring: KeyRing) -> DataConverter:
    """The data converter of fsmflow: pydantic, encrypting when keys are given.

    With a key that encrypts, failures' messages and stack traces are moved into
    an encoded payload as well (Temporal's
    ``DefaultFailureConverterWithEncodedAttributes``): they can quote a tool's
    error or a refused value. Readers with the codec see them as they were; the
    history shows ``Encoded failure``.
    """
    if not ring:
        return pydantic_data_converter
    converter = dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(ring))
    if ring.current is None:
        return converter
    return dataclasses.replace(
        converter, failure_converter_class=DefaultFailureConverterWithEncodedAttributes
    )
