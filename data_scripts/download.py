"""Download and unpack the public data the project uses: NeRF's Blender synthetic scenes, the LLFF scenes, and the
Stanford bunny and dragon meshes. Standard library only.

Usage::

    python data_scripts/download.py blender --out data --scenes mic lego   # -> data/blender/<scene>/
    python data_scripts/download.py llff --out data --scenes fern          # -> data/llff/<scene>/
    python data_scripts/download.py stanford --out data                    # -> data/meshes/stanford/*.ply
    python data_scripts/download.py llff --out data --archive ~/Downloads/nerf_llff_data.zip   # no download

Archives go to ``<out>/_downloads/``. An interrupted download leaves ``<archive>.part`` and resumes from it
(HTTP Range) when run again; a finished download is renamed into place atomically, so a file without ``.part``
is always complete. Each archive is tried from its URLs in order (official release first, then a mirror).

Integrity: the publishers give no checksums for these archives and they could not be downloaded here to record
one, so the whole-archive check is the size the server declares (Content-Length / Content-Range) plus the
archive's own CRCs (zip) or a full read (tar.gz). Files whose originals are in the project's reference data
(fern's ``poses_bounds.npy``, mic's ``transforms_*.json``) are also checked against recorded sha256 sums.
Google Drive sometimes answers with an HTML page (download quota, virus-scan notice): the script then stops and
says how to download by hand and pass the file with ``--archive``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

USER_AGENT = "nerf-inr-methods-data/0.1 (+https://pypi.org/project/nerf-inr-methods/)"
CHUNK_BYTES = 1 << 20
GOOGLE_DRIVE = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"
NERF_DRIVE_FOLDER = "https://drive.google.com/drive/folders/128yBriW1IG_3NJ5Rp7APSTZsJqdJdfc1"
UCSD_MIRROR = "http://cseweb.ucsd.edu/~viscomp/projects/LF/papers/ECCV20/nerf/{}"


class DownloadError(RuntimeError):
    """A download or archive check failed; the message names the URL or file and what was expected."""


@dataclass(frozen=True)
class Archive:
    """One downloadable archive."""

    filename: str
    """Name under <out>/_downloads/."""
    urls: Tuple[str, ...]
    """Tried in order."""
    manual: str
    """Where a person can download it by hand (shown in errors)."""
    sha256: str | None = None
    """Whole-archive sha256, when it can be justified (none of the current ones can: see the module doc)."""
    size: int | None = None
    """Expected size in bytes, when known independently of the server."""
    member_sha256: Dict[str, str] = field(default_factory=dict)
    """Archive member -> sha256 for files whose originals we hold."""


@dataclass(frozen=True)
class Dataset:
    """A dataset: archives, the folder its scenes sit in inside them, and where they go under --out."""

    archives: Tuple[Archive, ...]
    root_in_archive: str | None
    """Folder holding one sub-folder per scene (None: the whole archive is extracted, see `extract_members`)."""
    destination: str
    """Folder under --out."""
    scenes: Tuple[str, ...] = ()
    extract_members: Dict[str, str] = field(default_factory=dict)
    """For archives without scenes: member -> file name under the destination."""


NERF_MEMBER_SHA256: Dict[str, str] = {
    "nerf_synthetic/mic/transforms_train.json": "2e3dd0c6a1f9c34fe0cdad9f423c56eaa794c102789ff31058ae396e9f882403",
    "nerf_synthetic/mic/transforms_val.json": "2112c3d2d44d1b202b47352e41d3963d18bf41adc9db45fee8fdd39c7adcaed0",
    "nerf_synthetic/mic/transforms_test.json": "a5062cd47c357b02e9774f9ac724af36398d463df5bbe0e8474d7dd13310fe2e",
    "nerf_llff_data/fern/poses_bounds.npy": "d2933dbdbec7791d4e9041570e5aff649bf934e99ee22d04d92044afe7d26270",
}
"""sha256 of the NeRF-release files whose originals are in the project's reference data."""


def _nerf_release(root: str, drive_id: str, destination: str, scenes: Tuple[str, ...]) -> Dataset:
    """A dataset of the original NeRF release: ``<root>.zip`` from its Google Drive folder (then the UCSD mirror),
    one sub-folder per scene under ``<root>/``, its members of :data:`NERF_MEMBER_SHA256` checked."""
    filename = f"{root}.zip"
    return Dataset(
        archives=(
            Archive(
                filename=filename,
                urls=(GOOGLE_DRIVE.format(drive_id), UCSD_MIRROR.format(filename)),
                manual=f"{NERF_DRIVE_FOLDER} (file {filename})",
                member_sha256={k: v for k, v in NERF_MEMBER_SHA256.items() if k.startswith(f"{root}/")},
            ),
        ),
        root_in_archive=root,
        destination=destination,
        scenes=scenes,
    )


DATASETS: Dict[str, Dataset] = {
    "blender": _nerf_release(
        "nerf_synthetic",
        "18JxhpWD-4ZmuFKLzKlAw-w5PpzZxXOcG",
        "blender",
        ("chair", "drums", "ficus", "hotdog", "lego", "materials", "mic", "ship"),
    ),
    "llff": _nerf_release(
        "nerf_llff_data",
        "16VnMcF1KJYxN9QId6TClMsZRahHNMW5g",
        "llff",
        ("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex"),
    ),
    "stanford": Dataset(
        archives=(
            Archive(
                filename="bunny.tar.gz",
                urls=("http://graphics.stanford.edu/pub/3Dscanrep/bunny.tar.gz",),
                manual="http://graphics.stanford.edu/data/3Dscanrep/ (Stanford Bunny, bunny.tar.gz)",
            ),
            Archive(
                filename="dragon_recon.tar.gz",
                urls=("http://graphics.stanford.edu/pub/3Dscanrep/dragon/dragon_recon.tar.gz",),
                manual="http://graphics.stanford.edu/data/3Dscanrep/ (Dragon, dragon_recon.tar.gz)",
            ),
        ),
        root_in_archive=None,
        destination="meshes/stanford",
        extract_members={
            "bunny/reconstruction/bun_zipper.ply": "bun_zipper.ply",
            "dragon_recon/dragon_vrip.ply": "dragon_vrip.ply",
        },
    ),
}


# ---------------------------------------------------------------------------------------------- downloading
def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _total_from_content_range(value: str | None) -> Tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header such as ``bytes 100-199/200`` or ``bytes */200``."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return first, total


def download(
    url: str,
    destination: Path,
    expected_size: int | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``destination``, resuming ``<destination>.part`` with an HTTP Range request.

    The partial file is kept on any interruption (run again to resume) and deleted only when its content is
    proven wrong (checksum or size mismatch). The finished file is renamed into place atomically.

    Args:
        url: http(s) URL.
        destination: final path; its folder is created.
        expected_size: bytes the file must have (checked against the server's declared size too).
        sha256: hex digest the file must have.
        timeout: seconds without data before giving up.
        progress: called as progress(bytes_so_far, total_or_None) after each chunk.
    Returns:
        destination.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    source_note = destination.with_name(destination.name + ".part.url")
    if part.exists() and (not source_note.exists() or source_note.read_text().strip() != url):
        part.unlink()  # a partial file from another URL may be another version of the file: start over
    offset = part.stat().st_size if part.exists() else 0
    source_note.write_text(url)

    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            _, total = _total_from_content_range(error.headers.get("Content-Range"))
            if total == offset:  # the partial file was already complete
                return _finish(part, source_note, destination, url, total, expected_size, sha256)
            part.unlink()
            return download(url, destination, expected_size, sha256, timeout, progress)
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"{url}: cannot connect ({reason})") from error

    with response:
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/html"):
            raise DownloadError(
                f"{url}: the server sent a web page (Content-Type {content_type}) instead of the file; "
                "Google Drive does this when its download quota is exceeded or it wants a confirmation"
            )
        if offset and response.status == 206:
            first, total = _total_from_content_range(response.headers.get("Content-Range"))
            if first != offset:
                raise DownloadError(
                    f"{url}: asked for bytes from {offset}, server sent Content-Range "
                    f"{response.headers.get('Content-Range')!r}"
                )
            mode = "ab"
        else:  # 200: the server ignored the Range header (or there was none): start from the beginning
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            mode = "wb"
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(f"{url}: server declares {total} bytes, expected {expected_size}")
        written = offset
        try:
            with open(part, mode) as file:
                while True:
                    block = response.read(CHUNK_BYTES)
                    if not block:
                        break
                    file.write(block)
                    written += len(block)
                    if progress is not None:
                        progress(written, total)
        except (OSError, ValueError) as error:  # timeouts, resets, http.client.IncompleteRead
            raise DownloadError(
                f"{url}: interrupted after {written} bytes ({error}); run again to resume from {part}"
            ) from error
    return _finish(part, source_note, destination, url, total, expected_size, sha256)


def _finish(
    part: Path,
    source_note: Path,
    destination: Path,
    url: str,
    total: int | None,
    expected_size: int | None,
    sha256: str | None,
) -> Path:
    size = part.stat().st_size
    if total is not None and size < total:
        raise DownloadError(f"{url}: connection closed at {size} of {total} bytes; run again to resume from {part}")
    if (total is not None and size > total) or (expected_size is not None and size != expected_size):
        part.unlink()
        wanted = expected_size if expected_size is not None else total
        raise DownloadError(f"{url}: downloaded {size} bytes, expected {wanted}; deleted {part}, run again")
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise DownloadError(f"{url}: sha256 {actual} does not match the expected {sha256}; deleted {part}")
    os.replace(part, destination)
    source_note.unlink(missing_ok=True)
    return destination


def fetch_archive(archive: Archive, folder: Path, timeout: float = 60.0, quiet: bool = False) -> Path:
    """Download an archive into ``folder`` (kept if already complete), trying its URLs in order."""
    destination = folder / archive.filename
    if destination.is_file():
        return destination
    errors = []
    for url in archive.urls:
        if not quiet:
            print(f"downloading {archive.filename} from {url}", file=sys.stderr)
        try:
            return download(url, destination, archive.size, archive.sha256, timeout, None if quiet else _progress())
        except DownloadError as error:
            errors.append(str(error))
            if not quiet:
                print(f"  failed: {error}", file=sys.stderr)
    raise DownloadError(
        f"could not download {archive.filename}:\n  " + "\n  ".join(errors) + f"\nDownload it by hand from "
        f"{archive.manual} and run again with --archive <path to {archive.filename}>."
    )


def _progress() -> Callable[[int, int | None], None]:
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 1.0 and (total is None or done < total):
            return
        last[0] = now
        share = f" ({100 * done / total:.1f}% of {total / 1e6:.1f} MB)" if total else ""
        print(f"\r  {done / 1e6:.1f} MB{share}", end="" if total is None or done < total else "\n", file=sys.stderr)

    return report


# ---------------------------------------------------------------------------------------------- archives
def _safe_member(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DownloadError(f"{archive}: member {name!r} would be written outside the output folder; refusing")
    return path


def archive_members(path: Path) -> List[str]:
    """Names of the files in a zip or tar archive (folders and macOS metadata left out)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [info.filename for info in archive.infolist() if not info.is_dir()]
        else:
            with tarfile.open(path) as archive:
                names = [member.name for member in archive.getmembers() if member.isfile()]
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        head = path.read_bytes()[:64] if path.is_file() else b""
        hint = " (it looks like a web page)" if b"<html" in head.lower() or b"<!doctype" in head.lower() else ""
        raise DownloadError(
            f"{path}: not a readable zip or tar archive{hint} ({error}); delete it and run again"
        ) from error
    for name in names:
        _safe_member(name, path)
    return [name for name in names if not name.startswith("__MACOSX/")]


def read_members(path: Path, names: Sequence[str]) -> Iterator[Tuple[str, bytes]]:
    """Yield (name, bytes) of archive members, opening the archive once (zip members are CRC-checked)."""
    missing = set(names)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                present = set(archive.namelist())
                for name in names:
                    if name in present:
                        missing.discard(name)
                        yield name, archive.read(name)
        else:
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.name in missing and member.isfile():
                        file = archive.extractfile(member)
                        if file is not None:
                            missing.discard(member.name)
                            yield member.name, file.read()
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise DownloadError(f"{path}: corrupt archive ({error}); delete it and run again") from error
    if missing:
        raise DownloadError(f"{path}: expected member(s) missing: {sorted(missing)}")


def check_members(path: Path, member_sha256: Dict[str, str]) -> None:
    """Compare members whose originals we know with their recorded sha256."""
    for name, data in read_members(path, list(member_sha256)):
        actual = hashlib.sha256(data).hexdigest()
        if actual != member_sha256[name]:
            raise DownloadError(
                f"{path}: member {name} has sha256 {actual}, expected {member_sha256[name]} (corrupt or different "
                "archive); delete it and run again"
            )


def extract(path: Path, members: Dict[str, Path]) -> None:
    """Extract archive members to the given files, each written to a temporary name and renamed."""
    for name, data in read_members(path, list(members)):
        target = members[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, target)


def install_scene(path: Path, names: Sequence[str], root: str, scene: str, destination: Path) -> Path:
    """Extract ``<root>/<scene>/...`` from an archive to ``destination / scene``, atomically (temporary folder
    then rename); an existing scene folder is left alone."""
    final = destination / scene
    if final.exists():
        return final
    prefix = f"{root}/{scene}/"
    members = [name for name in names if name.startswith(prefix)]
    if not members:
        raise DownloadError(f"{path}: no files under {prefix!r}; expected the scene {scene!r} there")
    staging = destination / f".{scene}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    extract(path, {name: staging / name[len(prefix) :] for name in members})
    os.replace(staging, final)
    return final


def prepare(
    dataset_name: str,
    out: Path,
    scenes: Sequence[str] | None = None,
    archives: Sequence[Path] | None = None,
    urls: Sequence[str] | None = None,
    keep_archives: bool = True,
    timeout: float = 60.0,
    quiet: bool = False,
) -> List[Path]:
    """Download (or take) the archives of a dataset, check them, and extract the scenes or meshes.

    Args:
        dataset_name: a key of DATASETS.
        out: output root; scenes go to ``out/<dataset destination>/``, archives to ``out/_downloads/``.
        scenes: scenes to extract (default: all).
        archives: local archive files to use instead of downloading, in the dataset's archive order.
        urls: URLs to use instead of the built-in ones (one per archive), e.g. a local mirror.
        keep_archives: keep downloaded archives (deleting them saves disk but a later run downloads again).
        timeout: seconds without data before a download gives up.
        quiet: no progress output.
    Returns:
        The extracted scene folders or mesh files.
    """
    if dataset_name not in DATASETS:
        raise ValueError(f"unknown dataset {dataset_name!r}; expected one of {sorted(DATASETS)}")
    dataset = DATASETS[dataset_name]
    if archives is not None and len(archives) != len(dataset.archives):
        expected = ", ".join(a.filename for a in dataset.archives)
        raise ValueError(f"--archive: {dataset_name} needs {len(dataset.archives)} file(s) ({expected})")
    if urls is not None and len(urls) != len(dataset.archives):
        raise ValueError(f"--url: {dataset_name} needs {len(dataset.archives)} URL(s), got {len(urls)}")
    chosen = list(scenes) if scenes else list(dataset.scenes)
    unknown = sorted(set(chosen) - set(dataset.scenes))
    if unknown:
        raise ValueError(f"unknown {dataset_name} scenes {unknown}; expected some of {list(dataset.scenes)}")

    destination = out / dataset.destination
    results: List[Path] = []
    for index, archive in enumerate(dataset.archives):
        if archives is not None:
            path = Path(archives[index])
            if not path.is_file():
                raise FileNotFoundError(f"--archive {path}: file not found (expected {archive.filename})")
            downloaded = False
        else:
            if urls is not None:
                archive = dataclasses.replace(archive, urls=(urls[index],))
            path = fetch_archive(archive, out / "_downloads", timeout, quiet)
            downloaded = True
        names = archive_members(path)
        check_members(path, archive.member_sha256)
        if dataset.root_in_archive is not None:
            for scene in chosen:
                results.append(install_scene(path, names, dataset.root_in_archive, scene, destination))
        else:
            by_name = {name.removeprefix("./"): name for name in names}
            wanted = {
                by_name[name]: destination / target
                for name, target in dataset.extract_members.items()
                if name in by_name
            }
            if not wanted:
                expected = ", ".join(dataset.extract_members)
                raise DownloadError(f"{path}: none of the expected members ({expected}) is in the archive")
            extract(path, wanted)
            results.extend(wanted.values())
        if downloaded and not keep_archives:
            path.unlink()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(DATASETS), help="what to download")
    parser.add_argument("--out", type=Path, default=Path("data"), help="output root (default: data)")
    parser.add_argument("--scenes", nargs="+", help="scenes to extract (default: all)")
    parser.add_argument("--archive", nargs="+", type=Path, help="use these local archives instead of downloading")
    parser.add_argument("--url", nargs="+", help="download from these URLs instead (one per archive)")
    parser.add_argument("--delete-archives", action="store_true", help="delete downloaded archives when done")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without data before giving up")
    args = parser.parse_args(argv)
    try:
        paths = prepare(
            args.dataset, args.out, args.scenes, args.archive, args.url, not args.delete_archives, args.timeout
        )
    except (DownloadError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
