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
  3 channels unless every pixel is grey.

Either way the result is uint8 NCHW images and int64 labels (`normalize`). Archives are
checked before anything is decompressed: member count, declared sizes and compression ratio
(zip bombs), and each array's header (its declared shape must fit its member).
"""

import io
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any

import numpy as np

from shared.jobs import ServiceError
from shared.settings import Settings

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("y_train_clean", "classes")
MIN_SIZE, MAX_SIZE = 8, 256
MAX_CLASSES = 1000
TEST_SHARE = 0.2  # of each class, for a zip without train/ and test/ folders
SPLIT_SEED = 0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
RATIO_FLOOR = 16 * 1024 * 1024  # below this many uncompressed bytes, any compression ratio is fine

Arrays = dict[str, np.ndarray]
Entry = tuple[tuple[str, ...], zipfile.ZipInfo]  # a file's path parts, and its member


class BadDataset(ServiceError):
    """An upload that is not a data set noisyfit can train on; the message says what to change."""

    code = "bad_dataset"

    def __init__(self, message: str, field: str = "file"):
        super().__init__(message, field)


class UploadTooLarge(ServiceError):
    code = "upload_too_large"

    def __init__(self, message: str, field: str = "file"):
        super().__init__(message, field)


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # the uploaded file
    max_unpacked_bytes: int  # sum of the members' uncompressed sizes
    max_ratio: float = 200.0  # uncompressed / compressed, per member and overall
    max_members: int = 200_000

    @classmethod
    def of(cls, settings: Settings) -> "UploadLimits":
        return cls(settings.max_upload_bytes, 4 * settings.max_upload_bytes)


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
                return normalize(_read_npz(archive, members))
            return normalize(_read_image_folders(archive, members, limits.max_unpacked_bytes))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise BadDataset(f"the archive is corrupt ({exc}); create it again and re-upload") from exc


# ---------------------------------------------------------------- archives


def _checked_members(archive: zipfile.ZipFile, compressed: int, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """The archive's files, after the zip-bomb checks; zipfile stops reading a member at its declared size."""
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > limits.max_members:
        raise BadDataset(f"the archive holds {len(members)} files, more than {limits.max_members}; pack fewer images "
                         "or convert them to one .npz")
    total = sum(m.file_size for m in members)
    if total > limits.max_unpacked_bytes:
        raise BadDataset(f"the archive unpacks to {total} bytes, more than the {limits.max_unpacked_bytes} allowed; "
                         "upload less data")
    for m in members:
        if m.file_size > RATIO_FLOOR and m.file_size > limits.max_ratio * max(m.compress_size, 1):
            raise BadDataset(f"{m.filename} is compressed more than {limits.max_ratio:.0f}:1, which a data set never "
                             "is; this looks like a zip bomb")
    if total > RATIO_FLOOR and total > limits.max_ratio * max(compressed, 1):
        raise BadDataset(f"the archive is compressed more than {limits.max_ratio:.0f}:1, which a data set never is; "
                         "this looks like a zip bomb")
    return members


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
        train = sorted((p[1:], m) for p, m in entries if p[0] == "train")
        test = sorted((p[1:], m) for p, m in entries if p[0] == "test")
        classes = sorted({p[0] for p, _ in train})
        unknown = sorted({p[0] for p, _ in test} - set(classes))
        if unknown:
            raise BadDataset(f"test/ has classes that train/ lacks: {', '.join(unknown)}; "
                             "every class needs training images")
        x_train, y_train = _decode(archive, train, classes, budget)
        x_test, y_test = _decode(archive, test, classes, budget - x_train.nbytes)
    elif entries and all(len(p) == 2 for p, _ in entries):
        entries.sort()
        classes = sorted({p[0] for p, _ in entries})
        x, y = _decode(archive, entries, classes, budget)
        train_index, test_index = _split(y)
        x_train, y_train, x_test, y_test = x[train_index], y[train_index], x[test_index], y[test_index]
    else:
        raise BadDataset("a .zip of images must hold one folder per class: CLASS/IMAGE.png (split 80/20 into "
                         "train and test), or train/CLASS/IMAGE.png and test/CLASS/IMAGE.png")
    if _grey(x_train) and _grey(x_test):
        x_train, x_test = x_train[..., :1], x_test[..., :1]
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "classes": np.array(classes)}


def _grey(x: np.ndarray) -> bool:
    return bool((x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all())


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


def _decode(archive: zipfile.ZipFile, entries: list[Entry], classes: list[str], budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 [N, H, W, 3] and their labels (the rank of their folder in `classes`)."""
    from PIL import Image  # only uploads of image folders need it

    images, labels, first, decoded = [], [], None, 0
    for path, member in entries:
        try:
            with Image.open(io.BytesIO(archive.read(member))) as image:
                width, height = image.size
                if not (MIN_SIZE <= width <= MAX_SIZE and MIN_SIZE <= height <= MAX_SIZE):
                    raise BadDataset(f"{member.filename} is {width}×{height}; images must be {MIN_SIZE} to "
                                     f"{MAX_SIZE} pixels on each side")
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise BadDataset(f"{member.filename} cannot be decoded as an image ({exc}); remove or re-save it") from exc
        if first is None:
            first = (member.filename, pixels.shape)
        elif pixels.shape != first[1]:
            raise BadDataset(f"{member.filename} is {pixels.shape[1]}×{pixels.shape[0]} but {first[0]} is "
                             f"{first[1][1]}×{first[1][0]}; resize all images to one size")
        decoded += pixels.nbytes
        if decoded > budget:
            raise BadDataset(f"the images decode to more than {budget} bytes; upload fewer or smaller images")
        images.append(pixels)
        labels.append(classes.index(path[0]))
    if not images:
        raise BadDataset("the archive holds no images")
    return np.stack(images), np.array(labels, dtype=np.int64)


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


def normalize(arrays: Arrays) -> Arrays:
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
    return np.ascontiguousarray(_pixels(x, key))


def _pixels(x: np.ndarray, key: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise BadDataset(f"{key} is {x.dtype} with values outside [0, 1]; float images must be in [0, 1] "
                             "(or send uint8 0-255)")
        return np.rint(x * 255).astype(np.uint8)
    raise BadDataset(f"{key} is {x.dtype}; send uint8 pixels (0-255) or floats in [0, 1]")


def _labels(y: np.ndarray, key: str, n: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise BadDataset(f"{key} is {y.dtype}; labels must be integers 0 to K-1")
    if y.shape != (n,):
        raise BadDataset(f"{key} has shape {y.shape}; it needs one label per image: shape ({n},)")
    if y.min() < 0:
        raise BadDataset(f"{key} holds the negative label {y.min()}; labels must be 0 to K-1")
    return y.astype(np.int64)


def _classes(names: np.ndarray | None, labels: dict[str, np.ndarray]) -> list[str]:
    if names is None:
        highest = max(int(y.max()) for y in labels.values())
        if highest + 1 > MAX_CLASSES:
            raise BadDataset(f"the largest label is {highest}; at most {MAX_CLASSES} classes (labels 0 to "
                             f"{MAX_CLASSES - 1}) are allowed")
        k = highest + 1
        names = np.array([str(i) for i in range(k)])
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise BadDataset(f"classes has shape {names.shape} and type {names.dtype}; send a 1-D array of names")
    if not 2 <= len(names) <= MAX_CLASSES:
        raise BadDataset(f"the data set has {len(names)} classes; it needs 2 to {MAX_CLASSES}")
    for key, y in labels.items():
        if y.max() >= len(names):
            raise BadDataset(f"{key} holds the label {y.max()}, but there are {len(names)} classes; labels must be "
                             f"0 to {len(names) - 1}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    if len(set(classes)) != len(classes):
        raise BadDataset("classes repeats a name; give each class its own name")
    return classes


def _describe(x: np.ndarray) -> str:
    return f"{x.shape[1]}×{x.shape[2]}×{x.shape[3]}"


def describe(arrays: Arrays) -> dict[str, Any]:
    """The columns of a Dataset row, for normalised arrays."""
    _, channels, size, _ = arrays["x_train"].shape
    return {"num_classes": len(arrays["classes"]), "channels": channels, "size": size,
            "train_samples": len(arrays["y_train"]), "test_samples": len(arrays["y_test"]),
            "has_clean_labels": "y_train_clean" in arrays, "classes": arrays["classes"].tolist()}
