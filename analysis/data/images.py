"""Image cells of a dataset: which strings are image paths, path safety, content keys and checks."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

#: Extensions (lower case) that make a cell an image path.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_MAX_PATH_CHARS = 4096
#: Largest image (width x height) NegScope decodes: 40 megapixels (a 24 MP photo fits; a 12000 x 12000 PNG
#: of a few hundred KB, which would decode to 432 MB of RGB, does not). Checked on the header, before decoding.
MAX_IMAGE_PIXELS = 40_000_000


def image_size_problem(size: tuple[int, int], content: str) -> str | None:
    """A message when an image of ``size`` (width, height, from its header) is too large to decode, else None."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        return (
            f"the image {content[:120]!r} is {width} x {height} pixels ({width * height / 1e6:.0f} MP); "
            f"NegScope decodes images up to {MAX_IMAGE_PIXELS / 1e6:.0f} MP: resize it"
        )
    return None


def looks_like_image_path(value: str) -> bool:
    """True when ``value`` reads as a path to an image file (png, jpg, jpeg, webp, bmp; any case)."""
    if not value[-5:].lower().endswith(IMAGE_EXTENSIONS):  # cheap test first: most text fails here
        return False
    return len(value) <= _MAX_PATH_CHARS and "\n" not in value and "\r" not in value


def image_path_mask(values: list[str | None]) -> np.ndarray:
    """Vectorised :func:`looks_like_image_path` over cells (None -> False).

    Parameters
    ----------
    values : list of str or None
        (M,) cells; strings must be valid Unicode (no lone surrogates).

    Returns
    -------
    numpy.ndarray
        (M,) bool.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    array = pa.array(values, type=pa.large_string())
    ext = pc.match_substring_regex(array, r"\.(png|jpe?g|webp|bmp)$", ignore_case=True)
    newline = pc.match_substring_regex(array, r"[\r\n]")
    short = pc.less_equal(pc.utf8_length(array), _MAX_PATH_CHARS)
    mask = pc.and_(pc.and_(ext, pc.invert(newline)), short)
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def text_key(text: str) -> str:
    """Content key of a text item: sha256 hex of ``"text\\0" + text`` (UTF-8)."""
    return hashlib.sha256(("text\0" + text).encode("utf-8")).hexdigest()


def image_key_from_bytes(data: bytes) -> str:
    """Content key of an image item: sha256 hex of ``"image\\0" + sha256_hex(file bytes)``."""
    return hashlib.sha256(("image\0" + hashlib.sha256(data).hexdigest()).encode("ascii")).hexdigest()


def image_key_from_path(content: str) -> str:
    """Fallback key of an image that could not be read (only with ``check_images=False``)."""
    return hashlib.sha256(("image-path\0" + content).encode("utf-8")).hexdigest()


def resolve_image_path(root: Path, content: str) -> tuple[Path | None, str | None]:
    """Resolve an image path written in a dataset against the dataset folder.

    Parameters
    ----------
    root : Path
        Absolute, resolved dataset folder.
    content : str
        The path as the dataset wrote it.

    Returns
    -------
    (path, problem)
        The resolved absolute path and None, or None and a message saying why the path is refused
        (absolute, leaves the folder through '..' or a symbolic link, or not a valid path).
    """
    if "\0" in content:
        return None, f"the image path {content[:120]!r} holds a NUL character"
    if PurePosixPath(content).is_absolute() or PureWindowsPath(content).is_absolute() or content.startswith("\\"):
        return None, f"the image path {content[:120]!r} is absolute; image paths must be relative to {root}"
    if PureWindowsPath(content).drive:
        return None, f"the image path {content[:120]!r} names a drive; image paths must be relative to {root}"
    try:
        resolved = (root / content).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        return None, f"the image path {content[:120]!r} cannot be resolved ({exc})"
    if not resolved.is_relative_to(root):
        return None, f"the image path {content[:120]!r} leaves the dataset folder {root}; it is refused"
    return resolved, None


@dataclass(frozen=True)
class ImageResult:
    """Outcome of reading one image: its key, or the problem found."""

    key: str | None
    problem: str | None


def inspect_image(path: Path, content: str, *, check: bool) -> ImageResult:
    """Read an image file, compute its content key and, when ``check``, verify it with PIL.

    Without ``check`` a file that cannot be read gets a key derived from its path instead of an error.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problem = f"the image {content[:120]!r} does not exist"
    except IsADirectoryError:
        problem = f"the image path {content[:120]!r} is a folder, not an image file"
    except OSError as exc:
        problem = f"the image {content[:120]!r} cannot be read ({exc.strerror or exc})"
    else:
        if check:
            from PIL import Image

            try:
                with Image.open(io.BytesIO(data)) as image:
                    too_big = image_size_problem(image.size, content)
                    if too_big is None:
                        image.verify()
            except Exception as exc:  # noqa: BLE001 - PIL raises many types for a broken file
                return ImageResult(None, f"the image {content[:120]!r} is not a readable image ({exc})")
            if too_big is not None:
                return ImageResult(None, too_big)
        return ImageResult(image_key_from_bytes(data), None)
    if check:
        return ImageResult(None, problem)
    return ImageResult(image_key_from_path(content), None)


def inspect_images(
    paths: list[Path],
    contents: list[str],
    *,
    check: bool,
    progress: Callable[[float], None] | None = None,
    workers: int | None = None,
) -> list[ImageResult]:
    """:func:`inspect_image` over many files, on a few threads (file reads and hashing release the GIL).

    Parameters
    ----------
    paths : list of Path
        (M,) resolved image files.
    contents : list of str
        (M,) the paths as written in the dataset (for messages).
    check : bool
        Verify each image with PIL.
    progress : callable, optional
        Called with the fraction of images done.

    Returns
    -------
    list of ImageResult
        (M,) in the order of ``paths``.
    """
    total = len(paths)
    if total == 0:
        return []
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    chunk = 256
    results: list[ImageResult] = []
    if total <= chunk or workers <= 1:
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            batch = zip(paths[start:stop], contents[start:stop], strict=True)
            results.extend(inspect_image(p, c, check=check) for p, c in batch)
            if progress is not None:
                progress(stop / total)
        return results
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            batch = zip(paths[start:stop], contents[start:stop], strict=True)
            results.extend(pool.map(lambda pc: inspect_image(pc[0], pc[1], check=check), batch))
            if progress is not None:
                progress(stop / total)
    return results
