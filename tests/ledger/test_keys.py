"""Identities: RFC 8032 known answers, the key file's permissions, node id text."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidSignature, KeyFileError
from ledger.keys import Identity, node_id_text, parse_node_id, short_id, verify_signature

# RFC 8032 section 7.1, Ed25519: (secret key, public key, message, signature)
TEST_1024_MESSAGE = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0"
)
RFC8032_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        TEST_1024_MESSAGE,
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
        "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS, ids=["1", "2", "3", "1024"])
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    identity = Identity.from_seed(bytes.fromhex(secret))
    msg = bytes.fromhex(message)
    assert identity.public_key.hex() == public
    assert identity.sign(msg).hex() == signature  # Ed25519 signatures are deterministic
    verify_signature(bytes.fromhex(public), bytes.fromhex(signature), msg)


def test_rfc8032_test_1024_message_is_1023_bytes() -> None:
    assert len(bytes.fromhex(TEST_1024_MESSAGE)) == 1023


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS[:3], ids=["1", "2", "3"])
def test_rfc8032_signature_fails_after_any_change(secret: str, public: str, message: str, signature: str) -> None:
    key, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    for i in (0, 31, 32, 63):
        bad = bytearray(sig)
        bad[i] ^= 0x01
        with pytest.raises(InvalidSignature):
            verify_signature(key, bytes(bad), msg)
    with pytest.raises(InvalidSignature):
        verify_signature(key, sig, msg + b"\x00")
    with pytest.raises(InvalidSignature):
        verify_signature(bytes(32), sig, msg)  # not a valid curve point at all
    with pytest.raises(InvalidSignature):
        verify_signature(key[:31], sig, msg)   # wrong length: still the package's own error


def test_key_file_is_created_with_mode_0600_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "id.pem"
    identity = Identity.generate()
    identity.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path).public_key == identity.public_key


def test_save_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    first = Identity.generate()
    first.save(path)
    with pytest.raises(KeyFileError, match="already exists"):
        Identity.generate().save(path)
    assert Identity.load(path).public_key == first.public_key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610])
def test_load_refuses_a_key_that_others_can_read(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "id.pem"
    Identity.generate().save(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Identity.load(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", b"\xff" * 100, b"x" * 5000],
    ids=["empty", "text", "bad-pem", "binary", "too-large"],
)
def test_load_refuses_what_is_not_an_ed25519_pem(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "id.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError):
        Identity.load(path)


def test_load_refuses_another_key_type(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

    pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "ec.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem)
    os.close(fd)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        Identity.load(path)


def test_load_missing_file_is_a_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        Identity.load(tmp_path / "absent.pem")


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    a = Identity.load_or_create(path)
    b = Identity.load_or_create(path)
    assert a.public_key == b.public_key


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32))
def test_node_id_text_round_trips(key: bytes) -> None:
    text = node_id_text(key)
    assert text.startswith("as") and len(text) == 54
    assert text == text.lower()
    assert not set(text[2:]) & set("0189")  # nothing that reads as O, l, B or g
    assert parse_node_id(text) == key
    assert parse_node_id(f"  {text}\n") == key
    assert short_id(key) == text[:12]


def test_node_id_text_needs_32_bytes() -> None:
    with pytest.raises(ValueError):
        node_id_text(b"\x00" * 31)


GOOD = node_id_text(bytes(range(32)))


@pytest.mark.parametrize(
    "text",
    ["", "as", GOOD[:12], GOOD[:-1], GOOD + "a", "xx" + GOOD[2:], GOOD[2:], GOOD[:10] + "0" + GOOD[11:],
     GOOD[:10] + "!" + GOOD[11:], GOOD.upper()],
    ids=["empty", "prefix", "short-id", "one-short", "one-long", "bad-prefix", "no-prefix", "digit-0", "punct", "upper"],
)
def test_parse_node_id_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_node_id(text)


def test_parse_node_id_accepts_only_the_canonical_text() -> None:
    # base32 of 32 bytes leaves 4 spare bits in the last character: 15 other texts would decode
    # to the same key; and upper case would decode too. One key has exactly one text.
    key = bytes(range(32))
    good = node_id_text(key)
    same_key = []
    for c in "abcdefghijklmnopqrstuvwxyz234567":
        try:
            if parse_node_id(good[:-1] + c) == key:
                same_key.append(c)
        except ValueError:
            pass
    assert same_key == [good[-1]]
    with pytest.raises(ValueError):
        parse_node_id("as" + good[2:].upper())
