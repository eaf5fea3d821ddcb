"""Downloading MNIST and Fashion-MNIST from their mirrors, with checksums.

MNIST is verified by the SHA-256 of each file's decompressed bytes (the
content, so re-compressed mirrors still pass); Fashion-MNIST by the published
MD5 of each ``.gz`` archive. Every file is streamed to a temporary file in the
target folder and moved into place with :func:`os.replace` only once verified,
so an interrupted or corrupt download never leaves a file under the final name.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .idx import DataError

__all__ = ["CHECKSUMS", "IDX_FILES", "MIRRORS", "Checksum", "download"]

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Base URLs tried in order; each is joined with "<file>.gz".
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion_mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

TIMEOUT_SECONDS = 60.0
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Checksum:
    """Expected digest of one downloaded file.

    Attributes
    ----------
    algorithm : str
        A :mod:`hashlib` name, "sha256" or "md5".
    hexdigest : str
        The expected digest.
    of_content : bool
        True if the digest is over the decompressed bytes, False if over the
        ``.gz`` archive as downloaded.
    """

    algorithm: str
    hexdigest: str
    of_content: bool


CHECKSUMS: dict[str, dict[str, Checksum]] = {
    "mnist": {
        name: Checksum("sha256", digest, of_content=True)
        for name, digest in zip(
            IDX_FILES,
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
            strict=True,
        )
    },
    "fashion_mnist": {
        name: Checksum("md5", digest, of_content=False)
        for name, digest in zip(
            IDX_FILES,
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
            strict=True,
        )
    },
}

Opener = Callable[[str], BinaryIO]


def _urlopen(url: str) -> BinaryIO:
    return urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS)


def _content_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    try:
        with gzip.open(path, "rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as error:
        return f"<not a valid gzip file: {error}>"
    return digest.hexdigest()


def _fetch_verified(url: str, target: Path, checksum: Checksum, opener: Opener) -> None:
    """Stream `url` to a temp file beside `target`, verify it, then move it there."""
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temp_path = Path(temp_name)
    try:
        archive_digest = hashlib.new(checksum.algorithm)
        with os.fdopen(handle, "wb") as temp_file, opener(url) as response:
            while chunk := response.read(CHUNK_BYTES):
                archive_digest.update(chunk)
                temp_file.write(chunk)
        if checksum.of_content:
            actual = _content_digest(temp_path, checksum.algorithm)
        else:
            actual = archive_digest.hexdigest()
        if actual != checksum.hexdigest:
            raise DataError(
                f"Checksum mismatch for {url}: {checksum.algorithm} "
                f"{'of the decompressed bytes ' if checksum.of_content else ''}is "
                f"{actual}, expected {checksum.hexdigest}. The mirror served a "
                "corrupt or different file; it was discarded."
            )
        os.replace(temp_path, target)
    finally:
        temp_path.unlink(missing_ok=True)


def download(
    name: str,
    root: str | Path,
    *,
    mirrors: Sequence[str] | None = None,
    opener: Opener | None = None,
) -> Path:
    """Download the four IDX files of a dataset into ``<root>/<name>/``.

    Files already present (``<file>`` or ``<file>.gz``) are left alone; missing
    ones are fetched as ``<file>.gz``, trying each mirror in order until one
    serves a file with the right checksum.

    Parameters
    ----------
    name : str
        "mnist" or "fashion_mnist".
    root : str or Path
        Data root; the files go to ``<root>/<name>/``, created if needed.
    mirrors : sequence of str, optional
        Base URLs (ending in "/") to try in order instead of ``MIRRORS[name]``;
        any scheme urllib opens works, including ``file://``.
    opener : callable, optional
        ``opener(url)`` returns a readable binary context manager, like
        :func:`urllib.request.urlopen` (the default, with a timeout).

    Returns
    -------
    Path
        The folder holding the four files.

    Raises
    ------
    DataError
        If `name` is unknown, the folder cannot be written, or some file could
        not be fetched with a matching checksum from any mirror. The message
        lists each mirror's failure.
    """
    if name not in MIRRORS:
        raise DataError(f"Cannot download dataset {name!r}: only {sorted(MIRRORS)} have mirrors.")
    mirrors = list(MIRRORS[name] if mirrors is None else mirrors)
    opener = _urlopen if opener is None else opener
    folder = Path(root).expanduser() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"Cannot create the data folder {folder} for downloading {name}: "
            f"{error}. Choose a writable root (argument root, Hydra option "
            "dataset.root, or NNLAB_DATA_DIR)."
        ) from error
    for file_name in IDX_FILES:
        if (folder / file_name).exists() or (folder / f"{file_name}.gz").exists():
            continue
        failures = []
        for base in mirrors:
            url = f"{base}{file_name}.gz"
            try:
                _fetch_verified(url, folder / f"{file_name}.gz", CHECKSUMS[name][file_name], opener)
                break
            except (OSError, ValueError, http.client.HTTPException) as error:
                failures.append(f"{url} ({error})")
        else:
            raise DataError(f"Could not download {file_name}.gz for {name} into {folder}; tried {'; '.join(failures)}.")
    return folder
