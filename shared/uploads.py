"""Users' own data sets: read an uploaded file, refuse what cannot train, and normalise the rest.

Two formats, both zip archives:

- `.npz` (numpy.savez): arrays `x_train`, `y_train`, `x_test`, `y_test`, optionally
  `y_train_clean` (the true labels when `y_train` is noisy) and `classes` (names). Images
  are [N, H, W], [N, H, W, C] or [N, C, H, W] with C in {1, 3}, uint8 (0-255) or float in
  [0, 1]. Nothing is unpickled: object arrays are refused.
- `.zip` of images, one folder per class (`CLASS/IMAGE.png`), split into train and test by a
  seeded, per-class 80/20 split; or folders `train/CLASS/…` and `test/CLASS/…`, used as they
  are. One wrapping folder around either layout is fine. Class names are the folder names,
  labels their alphabetical rank. All images must have the same size; colour images give
  3 channels unless every pixel is grey. 16-bit grey images are scaled to 8 bits
  (value / 257, rounded).

Either way the result is uint8 NCHW images and int64 labels (`normalize`). Archives are
checked before anything is decompressed: member count, names (no control characters),
flags (no encryption, links or unknown compression), declared sizes and compression ratio
(zip bombs), and each array's header (its declared shape must fit its member). Arrays are
converted a slice at a time, so checking needs about twice the unpacked size in memory.

This module imports only numpy (and Pillow for images): the API runs it in a child process
with bounded memory and CPU (shared.upload_sandbox), never in its own.
"""

import io
import lzma
import math
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from shared.errors import BadDataset, UploadTooLarge

if TYPE_CHECKING:
    from PIL.Image import Image

    from shared.settings import Settings

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("y_train_clean", "classes")
MIN_SIZE, MAX_SIZE = 8, 256
MAX_CLASSES = 1000
MAX_NAME = 200  # characters of a class name (and of a data set's name)
TEST_SHARE = 0.2  # of each class, for a zip without train/ and test/ folders
SPLIT_SEED = 0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
RATIO_FLOOR = 16 * 1024 * 1024  # below this many uncompressed bytes, any compression ratio is fine
COMPRESSIONS = {zipfile.ZIP_STORED: "none", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                zipfile.ZIP_LZMA: "lzma"}
ENCRYPTED = 0x1  # general purpose flag bit 0
WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # Pillow's 16-bit (and 32-bit integer) grey
CHUNK_BYTES = 64 * 1024 * 1024  # images converted at a time
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control characters, lone surrogates
# A broken archive shows as any of these, from zipfile, its decompressors or struct.
CORRUPT = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, OSError, struct.error,
           ValueError, OverflowError)

Arrays = dict[str, np.ndarray]
Labelled = tuple[str, zipfile.ZipInfo]  # a class name, and one of its images
Entry = tuple[tuple[str, ...], zipfile.ZipInfo]  # a file's path parts, and its member




@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # the uploaded file
    max_unpacked_bytes: int  # sum of the members' uncompressed sizes, and of the decoded images
    max_ratio: float = 200.0  # uncompressed / compressed, per member and overall
    max_members: int = 200_000

    @classmethod
    def of(cls, settings: "Settings") -> "UploadLimits":
        return cls(settings.max_upload_bytes, settings.max_unpacked_bytes)


def unprintable(text: str) -> str | None:
    """The first control character or lone surrogate in `text`, or None: names must print as
    they are and store in any database (PostgreSQL refuses NUL)."""
    found = UNPRINTABLE.search(text)
    return found.group() if found else None


def file_size(file: IO[bytes]) -> int:
    file.seek(0, io.SEEK_END)
    size = file.tell()
    file.seek(0)
    return size


def read_upload(file: IO[bytes], limits: UploadLimits) -> Arrays:
    """Validate and normalise an uploaded .npz or .zip (a seekable binary file)."""
    size = file_size(file)
    if size > limits.max_bytes:
        raise UploadTooLarge(f"the file has {size} bytes, more than the {limits.max_bytes} allowed; upload less data")
    if not zipfile.is_zipfile(file):
        raise BadDataset("the file is neither an .npz (numpy.savez) nor a .zip of class folders; "
                         "a single .npy or a tar archive is not accepted")
    file.seek(0)
    try:
        with zipfile.ZipFile(file) as archive:
            members = _checked_members(archive, size, limits)
            if all(m.filename.endswith(".npy") for m in members):
                return checked_arrays(_read_npz(archive, members))
            return checked_arrays(_read_image_folders(archive, members, limits.max_unpacked_bytes))
    except UnicodeDecodeError as exc:
        raise BadDataset("a file name in the archive is marked as UTF-8 but is not; zip the files again "
                         "(any current zip tool writes valid names)") from exc
    except CORRUPT as exc:
        raise BadDataset(f"the archive is corrupt ({type(exc).__name__}: {exc}); create it again and re-upload") from exc


# ---------------------------------------------------------------- archives


def _checked_members(archive: zipfile.ZipFile, compressed: int, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """The archive's files, after the zip-bomb checks; zipfile stops reading a member at its declared size."""
    entries = archive.infolist()
    if len(entries) > limits.max_members:
        raise BadDataset(f"the archive holds {len(entries)} files, more than {limits.max_members}; pack fewer images "
                         "or convert them to one .npz")
    for m in entries:
        _check_member(m)
    members = [m for m in entries if not m.is_dir()]
    total = sum(m.file_size for m in members)
    if total > limits.max_unpacked_bytes:
        raise UploadTooLarge(f"the archive unpacks to {total} bytes, more than the {limits.max_unpacked_bytes} "
                             "allowed; upload less data")
    for m in members:
        if m.file_size > RATIO_FLOOR and m.file_size > limits.max_ratio * max(m.compress_size, 1):
            raise BadDataset(f"{m.filename} is compressed more than {limits.max_ratio:.0f}:1, which a data set never "
                             "is; this looks like a zip bomb")
    if total > RATIO_FLOOR and total > limits.max_ratio * max(compressed, 1):
        raise BadDataset(f"the archive is compressed more than {limits.max_ratio:.0f}:1, which a data set never is; "
                         "this looks like a zip bomb")
    return members


def _check_member(m: zipfile.ZipInfo) -> None:
    bad = unprintable(m.orig_filename)
    if bad is not None:
        raise BadDataset(f"the archive holds a file name with the control character {bad!r} "
                         f"({m.orig_filename[:60]!r}); rename it")
    if m.flag_bits & ENCRYPTED:
        raise BadDataset(f"{m.filename} is encrypted; zip the files again without a password")
    if m.compress_type not in COMPRESSIONS:
        raise BadDataset(f"{m.filename} uses compression method {m.compress_type}, which cannot be read here; "
                         f"use one of: {', '.join(COMPRESSIONS.values())} (zip and numpy.savez_compressed use deflate)")
    if m.create_system == 3 and stat.S_ISLNK(m.external_attr >> 16):
        raise BadDataset(f"{m.filename} is a symbolic link; put the file itself in the archive (zip -y stores links)")


def _read_npz(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> Arrays:
    names = {m.filename[: -len(".npy")]: m for m in members}
    missing = [key for key in REQUIRED if key not in names]
    if missing:
        raise BadDataset(f"the .npz lacks {', '.join(missing)}; it needs arrays {', '.join(REQUIRED)} "
                         f"(optional: {', '.join(OPTIONAL)})")
    unknown = sorted(set(names) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise BadDataset(f"the .npz holds unknown arrays {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(REQUIRED + OPTIONAL)}")
    return {key: _read_npy(archive, member, key) for key, member in names.items()}


def _read_npy(archive: zipfile.ZipFile, member: zipfile.ZipInfo, key: str) -> np.ndarray:
    """One array, its header checked first: no object dtype, and a shape its member can hold."""
    with archive.open(member) as fp:
        try:
            version = np.lib.format.read_magic(fp)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fp)
        except ValueError as exc:
            raise BadDataset(f"{key} is not a numpy array file ({exc})") from exc
        if dtype.hasobject:
            raise BadDataset(f"{key} is an object array, which would need unpickling; save plain numeric arrays "
                             "(numbers, or fixed-width strings for classes)")
        if math.prod(shape) * dtype.itemsize > member.file_size:
            raise BadDataset(f"{key} declares shape {shape} but its file is too short; save the .npz again")
    with archive.open(member) as fp:
        try:
            return np.lib.format.read_array(fp, allow_pickle=False)
        except ValueError as exc:
            raise BadDataset(f"{key} cannot be read ({exc}); save the .npz again") from exc


def _read_image_folders(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], budget: int) -> Arrays:
    """Class folders of images; `budget` bounds the decoded pixels (compressed images unpack far beyond their files)."""
    entries = _strip_wrapper([(PurePosixPath(m.filename).parts, m) for m in members if not _hidden(m.filename)])
    for _, member in entries:
        if PurePosixPath(member.filename).suffix.lower() not in IMAGE_SUFFIXES:
            raise BadDataset(f"{member.filename} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                             "remove it from the archive")
    if entries and {p[0] for p, _ in entries} == {"train", "test"} and all(len(p) == 3 for p, _ in entries):
        train = _in_order((p[1], m) for p, m in entries if p[0] == "train")
        test = _in_order((p[1], m) for p, m in entries if p[0] == "test")
        classes = sorted({name for name, _ in train})
        unknown = sorted({name for name, _ in test} - set(classes))
        if unknown:
            raise BadDataset(f"test/ has classes that train/ lacks: {', '.join(unknown)}; "
                             "every class needs training images")
    elif entries and all(len(p) == 2 for p, _ in entries):
        labelled = _in_order((p[0], m) for p, m in entries)
        classes = sorted({name for name, _ in labelled})
        train_index, test_index = _split(_labels_of(labelled, classes))
        train, test = [labelled[i] for i in train_index], [labelled[i] for i in test_index]
    else:
        raise BadDataset("a .zip of images must hold one folder per class: CLASS/IMAGE.png (split 80/20 into "
                         "train and test), or train/CLASS/IMAGE.png and test/CLASS/IMAGE.png")
    x_train, x_test = _decode(archive, [train, test], budget)
    if _grey(x_train) and _grey(x_test):
        x_train, x_test = x_train[:, :1], x_test[:, :1]
    return {"x_train": x_train, "y_train": _labels_of(train, classes), "x_test": x_test,
            "y_test": _labels_of(test, classes), "classes": np.array(classes)}


def _in_order(images: Iterator[Labelled]) -> list[Labelled]:
    return sorted(images, key=lambda image: (image[0], image[1].filename))


def _labels_of(images: list[Labelled], classes: list[str]) -> np.ndarray:
    rank = {name: i for i, name in enumerate(classes)}
    return np.array([rank[name] for name, _ in images], dtype=np.int64)


def _grey(x: np.ndarray) -> bool:
    return all(bool((part[:, 0] == part[:, 1]).all() and (part[:, 1] == part[:, 2]).all()) for part in _slices(x))


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def _strip_wrapper(entries: list[Entry]) -> list[Entry]:
    """Drop a folder that wraps everything (zipping `mydata/` puts it in front of every path)."""
    def wrapped() -> bool:
        tops = {p[0] for p, _ in entries}
        return len(tops) == 1 and not tops & {"train", "test"} and all(len(p) >= 3 for p, _ in entries)

    while entries and wrapped():
        entries = [(p[1:], m) for p, m in entries]
    return entries


def _decode(archive: zipfile.ZipFile, parts: list[list[Labelled]], budget: int) -> list[np.ndarray]:
    """Each part's images as uint8 [N, 3, H, W], decoded straight into arrays sized (and
    checked against `budget`) from the first image."""
    everything = [member for part in parts for _, member in part]
    if not everything:
        raise BadDataset("the archive holds no images")
    first = _image(archive, everything[0])
    _, height, width = first.shape
    total = len(everything) * first.nbytes
    if total > budget:
        raise UploadTooLarge(f"the images decode to more than {budget} bytes ({len(everything)} images of "
                             f"{width}×{height}, 3 channels: {total}); upload fewer or smaller images")
    arrays = []
    for part in parts:
        x = np.empty((len(part), *first.shape), np.uint8)
        for i, (_, member) in enumerate(part):
            pixels = _image(archive, member)
            if pixels.shape != first.shape:
                raise BadDataset(f"{member.filename} is {pixels.shape[2]}×{pixels.shape[1]} but "
                                 f"{everything[0].filename} is {width}×{height}; resize all images to one size")
            x[i] = pixels
        arrays.append(x)
    return arrays


def _image(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> np.ndarray:
    """One image as uint8 [3, H, W]. Pillow raises many kinds of errors on a broken file; each
    means the image cannot be decoded."""
    from PIL import Image  # only uploads of image folders need it

    data = archive.read(member)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if not (MIN_SIZE <= width <= MAX_SIZE and MIN_SIZE <= height <= MAX_SIZE):
                raise BadDataset(f"{member.filename} is {width}×{height}; images must be {MIN_SIZE} to "
                                 f"{MAX_SIZE} pixels on each side")
            return _rgb(image, member.filename)
    except (BadDataset, MemoryError):
        raise
    except Exception as exc:
        raise BadDataset(f"{member.filename} cannot be decoded as an image ({type(exc).__name__}: {exc}); "
                         "remove or re-save it") from exc


def _rgb(image: "Image", name: str) -> np.ndarray:
    """[3, H, W] uint8. Grey of 16 bits (Pillow's I;16 modes, and I) is scaled by 1/257, which
    maps 0..65535 onto 0..255; Pillow's own conversion would clip it at 255."""
    if image.mode in WIDE_MODES:
        wide = np.asarray(image)
        if wide.min() < 0 or wide.max() > 65535:
            raise BadDataset(f"{name} holds values beyond 16 bits; save it with 8 or 16 bits per pixel")
        grey = np.rint(wide / 257).astype(np.uint8)
        return np.broadcast_to(grey, (3, *grey.shape))
    if image.mode == "F":
        raise BadDataset(f"{name} is a floating-point image; save it with 8 or 16 bits per pixel")
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def _split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, per class: floor(20%) of each class's images to test, the rest to train."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(len(members) * TEST_SHARE)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ---------------------------------------------------------------- arrays


def checked_arrays(arrays: Arrays) -> Arrays:
    """Check shapes, types and labels; images to uint8 NCHW, labels to int64."""
    x_train = _images(arrays["x_train"], "x_train")
    x_test = _images(arrays["x_test"], "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise BadDataset(f"x_train images are {_describe(x_train)} but x_test images are {_describe(x_test)}; "
                         "both need the same channels and size")
    labels = {key: _labels(arrays[key], key, len(x)) for key, x in
              (("y_train", x_train), ("y_test", x_test), ("y_train_clean", x_train)) if key in arrays}
    classes = _classes(arrays.get("classes"), labels)
    present = np.unique(labels["y_train"])
    if len(present) < len(classes):
        absent = sorted(set(range(len(classes))) - set(present.tolist()))
        raise BadDataset(f"y_train has no sample of class {', '.join(map(str, absent[:10]))}"
                         f"{' …' if len(absent) > 10 else ''}; every class needs training samples "
                         f"(labels are 0 to {len(classes) - 1})")
    return {"x_train": x_train, "x_test": x_test, **labels, "classes": np.array(classes, dtype=str)}


def _images(x: np.ndarray, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise BadDataset(f"{key} has shape {x.shape}; images are [N, H, W], [N, H, W, C] or [N, C, H, W] "
                         "with C = 1 (grey) or 3 (colour)")
    n, _, height, width = x.shape
    if n == 0:
        raise BadDataset(f"{key} holds no images")
    if not (MIN_SIZE <= height <= MAX_SIZE and MIN_SIZE <= width <= MAX_SIZE):
        raise BadDataset(f"{key} images are {height}×{width}; each side must be {MIN_SIZE} to {MAX_SIZE} pixels")
    if height != width:
        raise BadDataset(f"{key} images are {height}×{width}; the models take square images, so crop or pad them")
    return _pixels(x, key)


def _pixels(x: np.ndarray, key: str) -> np.ndarray:
    """Contiguous uint8, converted a slice at a time (a float array is not copied whole)."""
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise BadDataset(f"{key} is {x.dtype}; send uint8 pixels (0-255) or floats in [0, 1]")
    out = np.empty(x.shape, np.uint8)
    start = 0
    for part in _slices(x):
        if not np.isfinite(part).all() or part.min() < 0 or part.max() > 1:
            raise BadDataset(f"{key} is {x.dtype} with values outside [0, 1]; float images must be in [0, 1] "
                             "(or send uint8 0-255)")
        out[start:start + len(part)] = np.rint(part * 255)
        start += len(part)
    return out


def _slices(x: np.ndarray) -> Iterator[np.ndarray]:
    """x in slices along its first axis of about CHUNK_BYTES each."""
    step = max(1, CHUNK_BYTES // max(1, x[0].nbytes)) if len(x) else 1
    for start in range(0, len(x), step):
        yield x[start:start + step]


def _labels(y: np.ndarray, key: str, n: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise BadDataset(f"{key} is {y.dtype}; labels must be integers 0 to K-1")
    if y.shape != (n,):
        raise BadDataset(f"{key} has shape {y.shape}; it needs one label per image: shape ({n},)")
    if y.min() < 0:
        raise BadDataset(f"{key} holds the negative label {y.min()}; labels must be 0 to K-1")
    if y.max() >= MAX_CLASSES:
        raise BadDataset(f"{key} holds the label {y.max()}; at most {MAX_CLASSES} classes (labels 0 to "
                         f"{MAX_CLASSES - 1}) are allowed")
    return y.astype(np.int64)


def _classes(names: np.ndarray | None, labels: dict[str, np.ndarray]) -> list[str]:
    if names is None:
        names = np.array([str(i) for i in range(max(int(y.max()) for y in labels.values()) + 1)])
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise BadDataset(f"classes has shape {names.shape} and type {names.dtype}; send a 1-D array of names")
    if not 2 <= len(names) <= MAX_CLASSES:
        raise BadDataset(f"the data set has {len(names)} classes; it needs 2 to {MAX_CLASSES}")
    for key, y in labels.items():
        if y.max() >= len(names):
            raise BadDataset(f"{key} holds the label {y.max()}, but there are {len(names)} classes; labels must be "
                             f"0 to {len(names) - 1}")
    classes = [_class_name(n) for n in names.tolist()]
    if len(set(classes)) != len(classes):
        raise BadDataset("classes repeats a name; give each class its own name")
    return classes


def _class_name(name: str | bytes) -> str:
    try:
        text = name.decode() if isinstance(name, bytes) else str(name)
    except UnicodeDecodeError as exc:
        raise BadDataset(f"the class name {name[:40]!r} is not UTF-8 text; save the names as str") from exc
    if len(text) > MAX_NAME:
        raise BadDataset(f"the class name {text[:40]!r}… has {len(text)} characters; use at most {MAX_NAME}")
    bad = unprintable(text)
    if bad is not None:
        raise BadDataset(f"the class name {text[:40]!r} holds the control character {bad!r}; rename the class")
    return text


def _describe(x: np.ndarray) -> str:
    return f"{x.shape[1]}×{x.shape[2]}×{x.shape[3]}"


def row_columns(arrays: Arrays) -> dict[str, Any]:
    """The columns of a DatasetRow, for normalised arrays."""
    _, channels, size, _ = arrays["x_train"].shape
    return {"num_classes": len(arrays["classes"]), "channels": channels, "size": size,
            "train_samples": len(arrays["y_train"]), "test_samples": len(arrays["y_test"]),
            "has_clean_labels": "y_train_clean" in arrays, "classes": arrays["classes"].tolist()}
