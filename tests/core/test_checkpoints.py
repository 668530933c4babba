"""Signed checkpoints: Ed25519 signed notes, key encodings and checkpoint bodies, with published vectors."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir.core.checkpoints import (
    MAX_TREE_SIZE,
    Checkpoint,
    CheckpointError,
    Signer,
    Verifier,
    generate_signer,
    key_hash,
    open_note,
    parse_checkpoint,
    sign_checkpoint,
    sign_note,
)

# Known answers from golang.org/x/mod/sumdb/note/note_test.go (the reference implementation's tests).
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

# A real checkpoint of the Go checksum database: the key from golang/go src/cmd/go/internal/modfetch/key.go,
# the note as retrieved from https://sum.golang.org/latest on 2024-09-23 and published in
# sigsum/sigsum-go pkg/checkpoint/checkpoint_test.go (TestGoSumDBCheckpoint).
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_CHECKPOINT = (
    "go.sum database tree\n"
    "30055305\n"
    "mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=\n"
    "\n"
    "— sum.golang.org "
    "Az3grpgEild5qw7+5dtV13Kf1C2Xurm8q4fhdxvcsDHnqNTaxL2AFjBY+2TyGKevucFcAAlWFJJYle3EJlDCrQ+y3A8=\n"
)

ORIGIN = "haldir.example/acme"
ROOT = hashlib.sha256(b"root").digest()

key_names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters="+"),
    min_size=1,
    max_size=20,
).filter(lambda name: not any(c.isspace() for c in name))
origins = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=30)
checkpoints = st.builds(
    Checkpoint,
    origin=origins,
    tree_size=st.integers(min_value=0, max_value=MAX_TREE_SIZE),
    root_hash=st.binary(min_size=32, max_size=32),
)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return generate_signer(ORIGIN)


def _note(signer: Signer, size: int = 42) -> str:
    return sign_checkpoint(Checkpoint(origin=ORIGIN, tree_size=size, root_hash=ROOT), signer)


def test_go_reference_verifier_key_parses_to_its_name_and_key_hash() -> None:
    verifier = Verifier.from_vkey(PETER_VKEY)
    assert verifier.name == "PeterNeumann"
    assert verifier.key_hash == bytes.fromhex("c74f20a3")
    assert verifier.vkey == PETER_VKEY


def test_go_reference_signer_key_derives_the_published_verifier_key() -> None:
    signer = Signer.from_skey(PETER_SKEY)
    assert signer.vkey == PETER_VKEY
    assert signer.skey == PETER_SKEY


def test_signing_the_go_reference_text_gives_the_go_reference_note_byte_for_byte() -> None:
    assert sign_note(GO_TEXT, Signer.from_skey(PETER_SKEY)) == GO_TEXT + "\n" + PETER_SIG


def test_go_signed_note_opens_with_its_published_verifier_key() -> None:
    assert open_note(GO_TEXT + "\n" + PETER_SIG, Verifier.from_vkey(PETER_VKEY)) == GO_TEXT


def test_go_note_with_two_signers_opens_for_each_and_ignores_the_other() -> None:
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(note, Verifier.from_vkey(PETER_VKEY)) == GO_TEXT
    assert open_note(note, Verifier.from_vkey(ENOCH_VKEY)) == GO_TEXT


def test_go_note_with_a_corrupted_signature_is_refused() -> None:
    note = GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(CheckpointError, match=r"invalid signature for key PeterNeumann\+c74f20a3"):
        open_note(note, Verifier.from_vkey(PETER_VKEY))


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + "— Bad Name" + PETER_SIG.removeprefix("— PeterNeumann").removesuffix("\n"),
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        GO_TEXT + "\n" + PETER_SIG * 101,
    ],
    ids=[
        "no-blank-line",
        "no-signatures",
        "no-final-newline",
        "control",
        "bad-name",
        "extra-line",
        "101-sigs",
    ],
)
def test_go_reference_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(CheckpointError):
        open_note(note, Verifier.from_vkey(PETER_VKEY))


def test_note_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(CheckpointError, match="not valid UTF-8"):
        open_note(b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), Verifier.from_vkey(PETER_VKEY))


def test_every_truncation_or_single_character_change_of_the_go_verifier_key_is_refused() -> None:
    for start in range(len(PETER_VKEY)):
        for end in range(start + 1, len(PETER_VKEY) + 1):
            if (start, end) != (0, len(PETER_VKEY)):
                with pytest.raises(CheckpointError):
                    Verifier.from_vkey(PETER_VKEY[start:end])
    for position in range(len(PETER_VKEY)):
        changed = PETER_VKEY[:position] + chr(ord(PETER_VKEY[position]) + 1) + PETER_VKEY[position + 1 :]
        with pytest.raises(CheckpointError):
            Verifier.from_vkey(changed)


def test_every_truncation_or_single_character_change_of_the_go_signer_key_is_refused() -> None:
    for start in range(len(PETER_SKEY)):
        for end in range(start + 1, len(PETER_SKEY) + 1):
            if (start, end) != (0, len(PETER_SKEY)):
                with pytest.raises(CheckpointError):
                    Signer.from_skey(PETER_SKEY[start:end])
    for position in range(len(PETER_SKEY)):
        changed = PETER_SKEY[:position] + chr(ord(PETER_SKEY[position]) + 1) + PETER_SKEY[position + 1 :]
        with pytest.raises(CheckpointError):
            Signer.from_skey(changed)


@pytest.mark.parametrize(
    ("vkey", "reason"),
    [
        # From the Go tests: a wrong-length key and an unknown algorithm, each with a matching key hash.
        # The first also ends in non-zero padding bits, which the strict base64 decoder already refuses.
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "not canonical base64",
        ),
        ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "not an Ed25519 key"),
        (
            "PeterNeumann+5bdbe860+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWAA==",
            "not an Ed25519 key",
        ),
    ],
)
def test_verifier_keys_that_are_not_ed25519_are_refused_even_with_a_matching_hash(
    vkey: str, reason: str
) -> None:
    with pytest.raises(CheckpointError, match=reason):
        Verifier.from_vkey(vkey)


def test_verifier_key_with_uppercase_hex_hash_is_refused() -> None:
    with pytest.raises(CheckpointError, match="8 lowercase hex"):
        Verifier.from_vkey(PETER_VKEY.replace("c74f20a3", "C74F20A3"))


def test_real_sum_golang_org_checkpoint_verifies_with_the_go_checksum_database_key() -> None:
    checkpoint = parse_checkpoint(
        SUMDB_CHECKPOINT, Verifier.from_vkey(SUMDB_VKEY), origin="go.sum database tree"
    )
    assert checkpoint == Checkpoint(
        origin="go.sum database tree",
        tree_size=30055305,
        root_hash=base64.b64decode("mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM="),
    )
    assert SUMDB_CHECKPOINT.startswith(checkpoint.body())


def test_real_sum_golang_org_checkpoint_with_a_changed_tree_size_is_refused() -> None:
    with pytest.raises(CheckpointError, match="invalid signature"):
        parse_checkpoint(SUMDB_CHECKPOINT.replace("30055305", "30055306"), Verifier.from_vkey(SUMDB_VKEY))


@given(name=key_names)
def test_key_hash_is_the_first_four_bytes_of_sha256_of_name_newline_0x01_and_public_key(name: str) -> None:
    signer = generate_signer(name)
    public = base64.b64decode(signer.vkey.split("+", 2)[2])[1:]
    expected = hashlib.sha256(name.encode("utf-8") + b"\x0a" + b"\x01" + public).digest()[:4]
    assert signer.key_hash == expected
    assert key_hash(name, public) == expected
    assert signer.vkey.split("+")[1] == expected.hex()
    signature_line = sign_note("hello\n", signer).split("\n")[2]
    assert base64.b64decode(signature_line.rsplit(" ", 1)[1])[:4] == expected


def test_key_hash_of_the_go_reference_key_is_its_published_hash() -> None:
    public = base64.b64decode(PETER_VKEY.split("+", 2)[2])[1:]
    assert hashlib.sha256(b"PeterNeumann\n\x01" + public).digest()[:4].hex() == "c74f20a3"


@given(name=key_names)
def test_generated_keys_round_trip_through_their_text_forms(name: str) -> None:
    signer = generate_signer(name)
    assert re.fullmatch(rf"{re.escape(name)}\+[0-9a-f]{{8}}\+[A-Za-z0-9+/]{{44}}", signer.vkey)
    assert re.fullmatch(rf"PRIVATE\+KEY\+{re.escape(name)}\+[0-9a-f]{{8}}\+[A-Za-z0-9+/]{{44}}", signer.skey)
    again = Signer.from_skey(signer.skey)
    assert (again.skey, again.vkey) == (signer.skey, signer.vkey)
    assert Verifier.from_vkey(signer.vkey) == signer.verifier
    assert Verifier.from_vkey(signer.vkey).vkey == signer.vkey


def test_generated_signers_have_distinct_keys() -> None:
    assert generate_signer(ORIGIN).vkey != generate_signer(ORIGIN).vkey


def test_signer_repr_shows_the_public_key_only(signer: Signer) -> None:
    # PRIVATE+KEY+<name>+<hash>+<base64 key>: the key's own base64 may hold "+" too.
    secret = signer.skey.split("+", 4)[4]
    assert len(secret) == 44
    assert secret not in repr(signer)
    assert signer.vkey in repr(signer)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "new\nline", "nbsp\u00a0x", "em\u2003space"])
def test_key_names_must_be_non_empty_without_spaces_or_plus(name: str) -> None:
    with pytest.raises(CheckpointError, match="key name"):
        generate_signer(name)


@given(checkpoint=checkpoints)
def test_signed_checkpoint_parses_back_to_itself(checkpoint: Checkpoint) -> None:
    signer = generate_signer("haldir.example/log")
    note = sign_checkpoint(checkpoint, signer)
    assert parse_checkpoint(note, signer.verifier, origin=checkpoint.origin) == checkpoint
    assert parse_checkpoint(note.encode(), Verifier.from_vkey(signer.vkey)) == checkpoint


def test_signed_checkpoint_has_the_c2sp_layout(signer: Signer) -> None:
    note = _note(signer, size=7)
    body, blank, signature = note.partition("\n\n")
    assert blank
    assert body + "\n" == f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()}\n"
    assert re.fullmatch(rf"\u2014 {re.escape(ORIGIN)} [A-Za-z0-9+/]{{91}}=\n", signature)
    raw = base64.b64decode(signature.split(" ")[2])
    assert raw[:4] == signer.key_hash
    assert signer.verifier.verify((body + "\n").encode(), raw[4:])


def test_checkpoint_signed_by_another_key_with_the_same_name_is_refused(signer: Signer) -> None:
    impostor = generate_signer(signer.name)
    with pytest.raises(CheckpointError, match="no signature from key"):
        parse_checkpoint(_note(impostor), signer.verifier)


def test_other_key_claiming_the_verifiers_name_and_key_hash_fails_signature_check(signer: Signer) -> None:
    impostor = generate_signer(signer.name)
    body, _, line = _note(impostor).partition("\n\n")
    prefix, encoded = line.rstrip("\n").rsplit(" ", 1)
    forged = base64.b64encode(signer.key_hash + base64.b64decode(encoded)[4:]).decode()
    with pytest.raises(CheckpointError, match="invalid signature"):
        parse_checkpoint(f"{body}\n\n{prefix} {forged}\n", signer.verifier)


@given(data=st.data())
def test_any_single_byte_change_in_a_signed_checkpoint_is_refused(data: st.DataObject) -> None:
    signer = generate_signer(ORIGIN)
    note = bytearray(_note(signer).encode())
    position = data.draw(st.integers(min_value=0, max_value=len(note) - 1), label="position")
    note[position] = (note[position] + data.draw(st.integers(1, 255), label="delta")) % 256
    with pytest.raises(CheckpointError):
        parse_checkpoint(bytes(note), signer.verifier)


def test_every_single_character_change_in_a_signed_checkpoint_is_refused(signer: Signer) -> None:
    note = _note(signer)
    for position, char in enumerate(note):
        for replacement in {"A", "0", "/", "\n", " ", "+"} - {char}:
            with pytest.raises(CheckpointError):
                parse_checkpoint(note[:position] + replacement + note[position + 1 :], signer.verifier)


@pytest.mark.parametrize("cut", ["body-only", "blank-line-only", "no-final-newline"])
def test_checkpoint_without_a_complete_signature_is_refused(signer: Signer, cut: str) -> None:
    note = _note(signer)
    body = note.split("\n\n")[0] + "\n"
    truncated = {"body-only": body, "blank-line-only": body + "\n", "no-final-newline": note[:-1]}[cut]
    with pytest.raises(CheckpointError):
        parse_checkpoint(truncated, signer.verifier)


def test_unknown_signers_lines_are_ignored_before_and_after(signer: Signer) -> None:
    other = generate_signer("witness.example/w1")
    note = _note(signer)
    body = note.split("\n\n")[0] + "\n"
    mine = note.split("\n\n")[1]
    theirs = sign_note(body, other).split("\n\n")[1]
    expected = Checkpoint(origin=ORIGIN, tree_size=42, root_hash=ROOT)
    assert parse_checkpoint(f"{body}\n{theirs}{mine}", signer.verifier) == expected
    assert parse_checkpoint(f"{body}\n{mine}{theirs}{ENOCH_SIG}", signer.verifier) == expected
    assert parse_checkpoint(f"{body}\n{mine}{theirs}", other.verifier) == expected


def test_a_bad_signature_line_from_the_known_key_rejects_the_note_even_beside_a_good_one(
    signer: Signer,
) -> None:
    note = _note(signer)
    line = note.split("\n\n")[1]
    raw = bytearray(base64.b64decode(line.rstrip("\n").rsplit(" ", 1)[1]))
    raw[-1] ^= 1
    bad = f"\u2014 {signer.name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(CheckpointError, match="invalid signature"):
        parse_checkpoint(note + bad, signer.verifier)


def test_a_note_with_only_other_signers_is_refused(signer: Signer) -> None:
    with pytest.raises(CheckpointError, match="no signature from key"):
        parse_checkpoint(_note(generate_signer("someone.else/log")), signer.verifier)


def test_checkpoint_from_another_origin_is_refused(signer: Signer) -> None:
    with pytest.raises(
        CheckpointError, match=r"origin is 'haldir\.example/acme', expected 'haldir\.example/globex'"
    ):
        parse_checkpoint(_note(signer), signer.verifier, origin="haldir.example/globex")


def _signed_body(signer: Signer, *lines: str) -> str:
    return sign_note("".join(f"{line}\n" for line in lines), signer)


@pytest.mark.parametrize(
    "size",
    ["01", "00", "-1", "+1", " 1", "1 ", "1.0", "0x1", "１", "٣", "", "9223372036854775808", "9" * 5000],
)
def test_tree_size_must_be_decimal_without_leading_zeros(signer: Signer, size: str) -> None:
    root = base64.b64encode(ROOT).decode()
    with pytest.raises(CheckpointError):
        parse_checkpoint(_signed_body(signer, ORIGIN, size, root), signer.verifier)


@pytest.mark.parametrize("size", ["0", "1", "10", str(MAX_TREE_SIZE)])
def test_tree_sizes_in_canonical_decimal_are_accepted(signer: Signer, size: str) -> None:
    root = base64.b64encode(ROOT).decode()
    assert parse_checkpoint(_signed_body(signer, ORIGIN, size, root), signer.verifier).tree_size == int(size)


@pytest.mark.parametrize(
    "root",
    [
        base64.b64encode(bytes(31)).decode(),
        base64.b64encode(bytes(33)).decode(),
        "",
        base64.b64encode(ROOT).decode().rstrip("="),
        base64.urlsafe_b64encode(b"\xff" * 32).decode(),
        base64.b64encode(ROOT).decode()[:-2] + "B=",
        ROOT.hex(),
    ],
    ids=["31-bytes", "33-bytes", "empty", "unpadded", "urlsafe", "non-canonical", "hex"],
)
def test_root_hash_must_be_canonical_base64_of_32_bytes(signer: Signer, root: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(_signed_body(signer, ORIGIN, "42", root), signer.verifier)


@pytest.mark.parametrize(
    "lines",
    [
        (ORIGIN, "42"),
        (ORIGIN, "42", base64.b64encode(ROOT).decode(), "extension line"),
        ("", "42", base64.b64encode(ROOT).decode()),
    ],
    ids=["two-lines", "extension-line", "empty-origin"],
)
def test_checkpoint_body_must_be_exactly_origin_size_and_root(signer: Signer, lines: tuple[str, ...]) -> None:
    with pytest.raises(CheckpointError, match="three non-empty lines"):
        parse_checkpoint(_signed_body(signer, *lines), signer.verifier)


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [
        ("", 1, ROOT),
        ("two\nlines", 1, ROOT),
        ("tab\torigin", 1, ROOT),
        (ORIGIN, -1, ROOT),
        (ORIGIN, MAX_TREE_SIZE + 1, ROOT),
        (ORIGIN, True, ROOT),
        (ORIGIN, 1, bytes(31)),
        (ORIGIN, 1, ROOT.hex()),
    ],
)
def test_checkpoint_values_are_validated_on_creation(origin: str, size: int, root: bytes) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(origin=origin, tree_size=size, root_hash=root)


@pytest.mark.parametrize("text", ["no final newline", "control\x07char\n", ""])
def test_sign_note_refuses_text_that_cannot_be_a_note(signer: Signer, text: str) -> None:
    with pytest.raises(CheckpointError, match="note text"):
        sign_note(text, signer)


def test_checkpoint_error_is_a_value_error_with_a_reason() -> None:
    error = CheckpointError("bad")
    assert isinstance(error, ValueError)
    assert error.reason == "bad"


@pytest.mark.parametrize("length", [1, 63, 65])
def test_a_signature_of_the_wrong_length_from_the_known_key_is_invalid(signer: Signer, length: int) -> None:
    body = _note(signer).split("\n\n")[0] + "\n"
    encoded = base64.b64encode(signer.key_hash + bytes(length)).decode()
    with pytest.raises(CheckpointError, match="invalid signature"):
        parse_checkpoint(f"{body}\n\u2014 {signer.name} {encoded}\n", signer.verifier)


def test_a_signature_too_short_to_hold_a_key_id_is_malformed(signer: Signer) -> None:
    body = _note(signer).split("\n\n")[0] + "\n"
    with pytest.raises(CheckpointError, match="too short"):
        parse_checkpoint(
            f"{body}\n\u2014 {signer.name} {base64.b64encode(signer.key_hash).decode()}\n", signer.verifier
        )


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33)])
def test_keys_of_the_wrong_length_are_refused(key: bytes) -> None:
    with pytest.raises(CheckpointError, match="32 bytes"):
        Verifier(name="log", public_key=key)
    with pytest.raises(CheckpointError, match="32 bytes"):
        Signer("log", key)


def test_a_signers_name_and_key_cannot_be_reassigned(signer: Signer) -> None:
    with pytest.raises(AttributeError):
        signer.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        signer.verifier = generate_signer("other").verifier  # type: ignore[misc]
