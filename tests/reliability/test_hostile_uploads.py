"""Hostile uploads: archives with odd flags, compression methods, links, directory entries,
names that are not UTF-8 or hold control characters, class names that no database stores,
and bytes flipped anywhere. Each kind is fuzzed (hypothesis) twice: against the reader itself
(shared.uploads.read_upload, many examples: it raises BadDataset or returns arrays, nothing
else) and through the API and its checker process (fewer: 201, 400 or 413 in the error
shape, never a 500).

The archives are written byte by byte (`raw_zip`), so that a test sets what zipfile never
writes: any flag bits, any method number, any name bytes, any external attributes.
"""

import io
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import BadDataset
from shared.uploads import COMPRESSIONS, UploadLimits, read_upload
from tests.reliability.conftest import User

LIMITS = UploadLimits(10**8, 10**9)
UTF8_NAMES = 0x800  # general purpose flag bit 11: the name is UTF-8
MANY, FEW = 150, 6  # examples per kind: in-process, through the API
CONTROL = st.sampled_from([chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))])


@dataclass(frozen=True)
class Member:
    name: bytes
    data: bytes
    flags: int = 0
    method: int = 0
    external_attr: int = 0o644 << 16
    create_system: int = 3  # unix


def raw_zip(members: list[Member]) -> bytes:
    """Local headers, data, central directory, end record; deflate (8) compresses, any other method stores as is."""
    out, central = io.BytesIO(), io.BytesIO()
    for m in members:
        body = zlib.compress(m.data)[2:-4] if m.method == 8 else m.data
        crc, offset = zlib.crc32(m.data), out.tell()
        out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, m.flags, m.method, 0, 0x21, crc, len(body),
                              len(m.data), len(m.name), 0) + m.name + body)
        central.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", m.create_system << 8 | 20, 20, m.flags,
                                  m.method, 0, 0x21, crc, len(body), len(m.data), len(m.name), 0, 0, 0, 0,
                                  m.external_attr, offset) + m.name)
    directory = central.getvalue()
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), out.tell(), 0)
    return out.getvalue() + directory + end


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def good_members(classes: np.ndarray | None = None) -> list[Member]:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), "y_train": np.arange(20) % 2,
              "x_test": rng.integers(0, 256, (4, 8, 8), dtype=np.uint8), "y_test": np.arange(4) % 2}
    if classes is not None:
        arrays["classes"] = classes
    return [Member(f"{key}.npy".encode(), npy(value), method=8) for key, value in arrays.items()]


def test_the_raw_writer_writes_what_the_reader_reads() -> None:
    arrays = read_upload(io.BytesIO(raw_zip(good_members())), LIMITS)
    assert arrays["x_train"].shape == (20, 1, 8, 8) and arrays["classes"].tolist() == ["0", "1"]


# ---------------------------------------------------------------- the kinds of hostile archive


@st.composite
def odd_flags(draw: st.DrawFn) -> tuple[bytes, str | None]:
    members, i = good_members(), draw(st.integers(0, 3))
    flags = draw(st.integers(0, 0xFFFF).filter(lambda f: not f & UTF8_NAMES))
    members[i] = replace(members[i], flags=flags)
    return raw_zip(members), "is encrypted" if flags & 1 else None


@st.composite
def odd_methods(draw: st.DrawFn) -> tuple[bytes, str | None]:
    members, i = good_members(), draw(st.integers(0, 3))
    method = draw(st.integers(0, 0xFFFF))
    members[i] = replace(members[i], method=method)
    return raw_zip(members), None if method in COMPRESSIONS else f"compression method {method}"


@st.composite
def non_utf8_names(draw: st.DrawFn) -> tuple[bytes, str | None]:
    def invalid(raw: bytes) -> bool:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    members, i = good_members(), draw(st.integers(0, 3))
    name = draw(st.binary(min_size=1, max_size=40).filter(invalid))
    members[i] = replace(members[i], name=name, flags=UTF8_NAMES)
    return raw_zip(members), "UTF-8"


@st.composite
def control_names(draw: st.DrawFn) -> tuple[bytes, str | None]:
    members, i = good_members(), draw(st.integers(0, 3))
    text = draw(st.text(max_size=20))
    at = draw(st.integers(0, len(text)))
    name = text[:at] + draw(CONTROL) + text[at:] + ".npy"
    members[i] = replace(members[i], name=name.encode("utf-8", "surrogatepass"), flags=UTF8_NAMES)
    return raw_zip(members), "control character"


@st.composite
def links_and_folders(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A symbolic link (unix attributes), or directory entries beside the arrays."""
    members = good_members()
    if draw(st.booleans()):
        i, system = draw(st.integers(0, 3)), draw(st.sampled_from([0, 3]))  # 0: DOS, where the bits mean nothing
        members[i] = replace(members[i], external_attr=(stat.S_IFLNK | 0o777) << 16, create_system=system)
        return raw_zip(members), "symbolic link" if system == 3 else None
    folders = draw(st.lists(st.text(st.characters(codec="ascii", min_codepoint=0x21), min_size=1, max_size=8),
                            min_size=1, max_size=4))
    for folder in folders:
        members.insert(draw(st.integers(0, len(members))), Member(
            f"{folder}/".encode(), draw(st.binary(max_size=8)), external_attr=(stat.S_IFDIR | 0o755) << 16))
    return raw_zip(members), None


@st.composite
def odd_class_names(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """`classes` holding a control character, bytes that are not UTF-8, or a lone surrogate."""
    kind = draw(st.sampled_from(["control", "bytes", "surrogate"]))
    if kind == "bytes":
        name = draw(st.binary(min_size=1, max_size=12).filter(lambda b: b.rstrip(b"\0") and not _utf8(b)))
        return raw_zip(good_members(np.array([b"ok", name], dtype="S12"))), "not UTF-8"
    bad = draw(CONTROL if kind == "control" else st.sampled_from([chr(c) for c in (0xD800, 0xDBFF, 0xDC00, 0xDFFF)]))
    name = draw(st.text(max_size=6)) + bad + "x"
    return raw_zip(good_members(np.array(["ok", name]))), "control character"


@st.composite
def flipped_bytes(draw: st.DrawFn) -> tuple[bytes, str | None]:
    data = bytearray(raw_zip(good_members()))
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data), None


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


KINDS: dict[str, Callable[[], st.SearchStrategy]] = {
    "odd flags": odd_flags, "odd compression methods": odd_methods, "names not UTF-8": non_utf8_names,
    "control characters in names": control_names, "links and directory entries": links_and_folders,
    "odd class names": odd_class_names, "flipped bytes": flipped_bytes,
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_reader_refuses_each_kind_with_a_bad_dataset_naming_it(kind: str) -> None:
    @settings(max_examples=MANY, deadline=None, database=None)
    @given(case=KINDS[kind]())
    def check(case: tuple[bytes, str | None]) -> None:
        data, words = case
        try:
            read_upload(io.BytesIO(data), LIMITS)
        except BadDataset as exc:
            assert words is None or words in exc.message, (words, exc.message)
            return
        assert words is None, f"accepted an archive that must be refused ({words})"

    check()


@pytest.fixture(scope="module")
def uploader(user: Callable[..., User]) -> User:
    return user("hostile-uploads")


@pytest.mark.parametrize("kind", KINDS)
def test_the_api_answers_each_kind_with_a_4xx_never_a_500(api: TestClient, uploader: User, kind: str) -> None:
    @settings(max_examples=FEW, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=KINDS[kind]())
    def check(case: tuple[bytes, str | None]) -> None:
        data, words = case
        response = api.post("/v1/datasets", data={"name": "hostile"}, files={"file": ("x.npz", data)},
                            headers=uploader.headers)
        assert response.status_code in (201, 400, 413), (response.status_code, response.text[:300])
        if response.status_code == 201:
            assert words is None, f"accepted an archive that must be refused ({words})"
            return
        error = response.json()["error"]
        assert error["code"] in ("bad_dataset", "request_too_large") and error["field"] == "file", error
        assert words is None or words in error["message"], (words, error["message"])

    check()


@pytest.mark.parametrize(("raw", "name"), [
    (b"a\xffb", "a\xffb"), (b"\xc3\x28", "\xc3("), (b"caf\xc3\xa9", "café"),  # not UTF-8: Starlette reads Latin-1
    (b"nul\x00name", None), (b"tab\tname", None), (b"\xed\xa0\x80", None),  # NUL, TAB, U+0080 (Latin-1 of a surrogate)
])
def test_multipart_names_as_raw_bytes_are_read_or_refused_never_a_500(api: TestClient, uploader: User,
                                                                      raw: bytes, name: str | None) -> None:
    """The `name` field and the file name sent as raw bytes: text that is not UTF-8 is read as
    Latin-1 (Starlette's rule) and kept; a control character in it is a 422 naming `name`."""
    boundary = b"hostileboundary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="name"\r\n\r\n' + raw + b"\r\n--" + boundary +
            b'\r\nContent-Disposition: form-data; name="file"; filename="' + raw + b'.npz"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + raw_zip(good_members()) + b"\r\n--" + boundary + b"--\r\n")
    response = api.post("/v1/datasets", content=body, headers={
        **uploader.headers, "Content-Type": "multipart/form-data; boundary=" + boundary.decode()})
    if name is None:
        assert response.status_code == 422, (response.status_code, response.text[:300])
        assert response.json()["error"]["field"] == "name" and "control character" in response.text
    else:
        assert response.status_code == 201, (response.status_code, response.text[:300])
        assert response.json()["name"] == name
