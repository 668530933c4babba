"""Signed checkpoints: C2SP `signed-note` with Ed25519 keys, carrying a C2SP `tlog-checkpoint` body.

Wire formats follow c2sp.org/signed-note and c2sp.org/tlog-checkpoint, and the key encodings of
golang.org/x/mod/sumdb/note, so a note signed here opens with Go's `note.Open` and vice versa.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = 0x01
ROOT_SIZE = 32
MAX_SIGNATURES = 100  # the cap Go's note.Open applies; the spec asks verifiers to accept at least 16
MAX_TREE_SIZE = 2**63 - 1  # what a signed 64-bit column (and Go's tlog) can hold

_SIG_PREFIX = "\u2014 "  # EM DASH, SPACE
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_KEY_HASH_HEX = re.compile(r"[0-9a-f]{8}")
_TREE_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls but newline
_LINE_BREAKING = re.compile(r"[\x00-\x1f]")


class CheckpointError(ValueError):
    """A signed note, checkpoint or key that is malformed or does not verify."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte Ed25519 key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() for c in name):
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")
    if _CONTROL.search(name):
        raise CheckpointError(f"key name {name!r} must not contain control characters")


def _b64decode(text: str, *, what: str) -> bytes:
    """Strict standard base64: only a value's canonical encoding is accepted, so no text is malleable."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise CheckpointError(f"{what} is not canonical base64")
    return raw


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key that verifies signed notes."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.public_key, bytes) or len(self.public_key) != 32:
            raise CheckpointError("an Ed25519 public key is 32 bytes")

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """`<name>+<8 hex key hash>+<base64(0x01 || public key)>`, the text a verifier is configured with."""
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_hash.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, text: str) -> Verifier:
        name, hash_hex, key = _split_key(text, what="verifier key")
        raw = _b64decode(key, what="verifier key material")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise CheckpointError("verifier key is not an Ed25519 key (0x01 followed by 32 bytes)")
        verifier = cls(name=name, public_key=raw[1:])
        if verifier.key_hash.hex() != hash_hex:
            raise CheckpointError(
                f"verifier key hash {hash_hex} does not match its name and key ({verifier.key_hash.hex()})"
            )
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    """A named Ed25519 private key that signs notes. Its repr never shows the key."""

    __slots__ = ("_private", "_verifier")

    def __init__(self, name: str, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise CheckpointError("an Ed25519 seed is 32 bytes")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._verifier = Verifier(name=name, public_key=self._private.public_key().public_bytes_raw())

    def __repr__(self) -> str:
        return f"Signer({self.vkey!r})"

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def verifier(self) -> Verifier:
        """The public half, to hand to whoever verifies this signer's notes."""
        return self._verifier

    @property
    def key_hash(self) -> bytes:
        return self.verifier.key_hash

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    @property
    def skey(self) -> str:
        """`PRIVATE+KEY+<name>+<8 hex key hash>+<base64(0x01 || seed)>`: secret, store it like a password."""
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self._private.private_bytes_raw()).decode()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_hash.hex()}+{encoded}"

    @classmethod
    def from_skey(cls, text: str) -> Signer:
        if not isinstance(text, str) or not text.startswith(_PRIVATE_PREFIX):
            raise CheckpointError("signer key must start with 'PRIVATE+KEY+'")
        name, hash_hex, key = _split_key(text[len(_PRIVATE_PREFIX) :], what="signer key")
        raw = _b64decode(key, what="signer key material")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise CheckpointError("signer key is not an Ed25519 key (0x01 followed by a 32-byte seed)")
        signer = cls(name, raw[1:])
        if signer.key_hash.hex() != hash_hex:
            raise CheckpointError(
                f"signer key hash {hash_hex} does not match its name and key ({signer.key_hash.hex()})"
            )
        return signer

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def generate_signer(name: str) -> Signer:
    """A new random Ed25519 signer named `name` (by convention the log's origin: `haldir.example/acme`)."""
    _check_name(name)
    return Signer(name, Ed25519PrivateKey.generate().private_bytes_raw())


def _split_key(text: str, *, what: str) -> tuple[str, str, str]:
    parts = text.split("+", 2) if isinstance(text, str) else []  # base64 may hold '+', names may not
    if len(parts) != 3:
        raise CheckpointError(f"{what} must look like '<name>+<8 hex key hash>+<base64 key>'")
    name, hash_hex, key = parts
    _check_name(name)
    if not _KEY_HASH_HEX.fullmatch(hash_hex):
        raise CheckpointError(f"{what} hash {hash_hex!r} must be 8 lowercase hex characters")
    return name, hash_hex, key


def sign_note(text: str, signer: Signer) -> str:
    """`text` followed by a blank line and one signature line from `signer`."""
    if not text.endswith("\n") or _CONTROL.search(text):
        raise CheckpointError("note text must end with a newline and hold no control characters but newlines")
    signature = signer.sign(text.encode())
    encoded = base64.b64encode(signer.key_hash + signature).decode()
    return f"{text}\n{_SIG_PREFIX}{signer.name} {encoded}\n"


def open_note(note: str | bytes, verifier: Verifier) -> str:
    """The text of `note` once a signature from `verifier` verifies; raise `CheckpointError` otherwise.

    Steps (c2sp.org/signed-note):
      1. the note is UTF-8 with no control characters other than newline;
      2. text and signatures split at the last blank line; the text ends in a newline and the
         signature block is one or more complete lines;
      3. every signature line is `— <name> <base64(4-byte key ID || signature)>` with a valid name,
         and there are at most MAX_SIGNATURES of them;
      4. lines whose name and key ID are not both the verifier's belong to other keys and are ignored;
      5. at least one line is the verifier's;
      6. every one of the verifier's lines verifies over the text bytes: one bad signature from the
         known key rejects the whole note.
    """
    # Step 1: encoding and characters.
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("note is not valid UTF-8") from None
    if _CONTROL.search(note):
        raise CheckpointError("note holds a control character other than newline")
    # Step 2: split text and signature block.
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise CheckpointError("note has no signature lines, or its last line lacks a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note has {len(lines)} signature lines, more than {MAX_SIGNATURES}")
    # Steps 3 and 4: parse every line, keep the verifier's.
    known = (verifier.name, verifier.key_hash)
    mine = [sig for name, key_id, sig in map(_parse_signature_line, lines) if (name, key_id) == known]
    # Step 5: at least one signature from the known key.
    if not mine:
        raise CheckpointError(
            f"note has no signature from key {verifier.name}+{verifier.key_hash.hex()}; "
            "check that the verifier key is this log's"
        )
    # Step 6: all of them verify.
    message = text.encode()
    if not all(verifier.verify(message, sig) for sig in mine):
        raise CheckpointError(f"invalid signature for key {verifier.name}+{verifier.key_hash.hex()}")
    return text


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise CheckpointError(f"signature line {line[:40]!r} does not start with an em dash and a space")
    name, space, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not space:
        raise CheckpointError(f"signature line {line[:40]!r} has no signature after the key name")
    _check_name(name)
    raw = _b64decode(encoded, what=f"signature of {name}")
    if len(raw) < 5:
        raise CheckpointError(f"signature of {name} is too short to hold a key ID and a signature")
    return name, raw[:4], raw[4:]


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed tree head: its origin, tree size and RFC 6962 root hash."""

    origin: str
    tree_size: int
    root_hash: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or _LINE_BREAKING.search(self.origin):
            raise CheckpointError(
                f"origin {self.origin!r} must be non-empty, one line, no control characters"
            )
        if type(self.tree_size) is not int or not 0 <= self.tree_size <= MAX_TREE_SIZE:
            raise CheckpointError(
                f"tree size must be an integer from 0 to {MAX_TREE_SIZE}, got {self.tree_size!r}"
            )
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != ROOT_SIZE:
            raise CheckpointError(f"root hash must be {ROOT_SIZE} bytes")

    def body(self) -> str:
        """The note text: origin, size and base64 root hash, each on its own line."""
        root = base64.b64encode(self.root_hash).decode()
        return f"{self.origin}\n{self.tree_size}\n{root}\n"


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The signed note of `checkpoint`, ready to publish."""
    return sign_note(checkpoint.body(), signer)


def parse_checkpoint(note: str | bytes, verifier: Verifier, *, origin: str | None = None) -> Checkpoint:
    """The checkpoint in `note`, once verified with `verifier`; raise `CheckpointError` otherwise.

    Steps:
      1-6. the note verifies (see `open_note`): no line of the body is read before that;
      7. the body is exactly three non-empty lines: origin, tree size, root hash (Haldir signs
         no extension lines, so none are accepted);
      8. the origin is the expected one, when given;
      9. the tree size is decimal without leading zeros (`0` only for the empty tree);
      10. the root hash is canonical base64 of 32 bytes.
    """
    # Steps 1-6: a verified signature before the text means anything.
    text = open_note(note, verifier)
    # Step 7: body shape.
    lines = text[:-1].split("\n")
    if len(lines) != 3 or not all(lines):
        raise CheckpointError(
            f"checkpoint body must be three non-empty lines (origin, size, root hash), got {len(lines)}"
        )
    found_origin, size_text, root_text = lines
    # Step 8: origin.
    if origin is not None and found_origin != origin:
        raise CheckpointError(f"checkpoint origin is {found_origin!r}, expected {origin!r}")
    # Step 9: tree size.
    if len(size_text) > 19 or not _TREE_SIZE.fullmatch(size_text) or int(size_text) > MAX_TREE_SIZE:
        raise CheckpointError(
            f"checkpoint tree size {size_text[:40]!r} must be a decimal integer without leading zeros"
        )
    # Step 10: root hash.
    root = _b64decode(root_text, what="checkpoint root hash")
    if len(root) != ROOT_SIZE:
        raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, expected {ROOT_SIZE}")
    return Checkpoint(origin=found_origin, tree_size=int(size_text), root_hash=root)
