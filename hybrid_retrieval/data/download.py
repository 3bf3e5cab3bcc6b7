"""Fetch XQuAD-R and MLQA-R as published (google-research-datasets/lareqa, fixed commits), checksummed.

    python -m hybrid_retrieval.data.download                 # both, into the user cache (see --help)
    python -m hybrid_retrieval.data.download xquad-r --dest ../shared/data
    hr-download-data mlqa-r

Every file is checked against its SHA-256 (the published blobs; MLQA-R was removed from the repository's HEAD
and is fetched from the last commit that has it). A dataset directory appears complete or not at all: files
are downloaded into a temporary directory beside it, checked, then renamed; a checksum mismatch or a broken
connection leaves nothing behind. MLQA-R is CC BY-NC 4.0 (non-commercial research use), XQuAD-R CC BY-SA 4.0.

Where the commands look for the data (``paths.data_dir``): the override, else ``$HYBRID_RETRIEVAL_DATA``, else
``../shared/data`` beside the checkout (or the working directory), else this command's cache folder.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from hybrid_retrieval.common.atomic import atomic_directory
from hybrid_retrieval.common.console import ArgumentParser, user_errors
from hybrid_retrieval.common.errors import UserError
from hybrid_retrieval.common.paths import data_cache_dir, file_in_the_way

BASE_URL = "https://raw.githubusercontent.com/google-research-datasets/lareqa"


@dataclass(frozen=True)
class Dataset:
    name: str
    commit: str
    license: str
    files: dict[str, tuple[str, str, int]]  # local name -> (path in the repository, sha256, bytes)


def _langs(folder: str, sums: dict[str, tuple[str, int]]) -> dict[str, tuple[str, str, int]]:
    return {f"{lang}.json": (f"{folder}/{lang}.json", sha, size) for lang, (sha, size) in sums.items()}


DATASETS = {
    "xquad-r": Dataset(
        "xquad-r",
        "9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c",
        "CC BY-SA 4.0",
        {
            **_langs(
                "xquad-r",
                {
                    "ar": ("c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d", 2234875),
                    "de": ("16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949", 732156),
                    "el": ("163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6", 2810127),
                    "en": ("7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe", 628651),
                    "es": ("f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de", 746335),
                    "hi": ("ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872", 2408404),
                    "ru": ("7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1", 2764904),
                    "th": ("c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4", 2618544),
                    "tr": ("f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94", 827827),
                    "vi": ("e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995", 1132303),
                    "zh": ("80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed", 959291),
                },
            ),
            "LICENSE": ("LICENSE", "25ddafc153e4cfdafd70729574ef1b44348e1814709e57680d55347038d3f92c", 15058),
            "README.md": ("README.md", "b88f32ef57482e4fc1b7c0dfa4e0c954a31048df81bc793d87e11479388cf3e6", 4053),
        },
    ),
    "mlqa-r": Dataset(
        "mlqa-r",
        "354d67d1cd066854cdfbf5ad0e6105528976141d",  # removed from the repository in b91469b; this is the last commit with it
        "CC BY-NC 4.0 (non-commercial research use)",
        {
            **_langs(
                "mlqa-r",
                {
                    "ar": ("2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137", 3329081),
                    "de": ("ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886", 887185),
                    "en": ("fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4", 2251129),
                    "es": ("70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7", 819818),
                    "hi": ("4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654", 3179023),
                    "vi": ("9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85", 1807239),
                    "zh": ("57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc", 1360698),
                },
            ),
            "LICENSE": ("mlqa-r/LICENSE", "336255dc30193e8e15d689d9481bb05673d89055718f3a96923a7ffb99adbbaf", 19333),
            "README.md": ("README.md", "89e21b9b4c13867b0a133feab8bdec8431623bf94749d0dccf0050b83231f265", 5111),
        },
    ),
}


class DownloadError(UserError):
    """A file that could not be fetched or whose checksum differs: the message names the URL."""


def is_complete(folder: Path, dataset: Dataset) -> bool:
    """Every file of ``dataset`` is in ``folder`` with its published size (checksums are checked at download)."""
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size == size for name, (_, _, size) in dataset.files.items()
    )


def _fetch(url: str, out: Path, sha: str, size: int, progress: tqdm, timeout: float) -> None:
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, out.open("wb") as fh:
            for block in iter(lambda: response.read(1 << 16), b""):
                fh.write(block)
                h.update(block)
                progress.update(len(block))
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"{url}: download failed ({reason}); check the connection or pass --base-url MIRROR") from None
    if h.hexdigest() != sha:
        raise DownloadError(
            f"{url}: checksum mismatch (sha256 {h.hexdigest()[:16]}…, expected {sha[:16]}…, {out.stat().st_size} of "
            f"{size} bytes): a corrupt or different file; nothing was kept"
        )


def download(name: str, dest: Path, base_url: str = BASE_URL, force: bool = False, timeout: float = 60.0) -> Path:
    """``dest / name`` holding the dataset's verified files (fetched only if incomplete or ``force``)."""
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    dataset, target = DATASETS[name], Path(dest) / name
    blocker = file_in_the_way(target)  # checked before anything is fetched: a file where a folder must go
    if blocker is not None:
        raise DownloadError(f"{blocker}: exists and is not a directory (--dest is the folder the datasets go in)")
    if is_complete(target, dataset) and not force:
        return target
    if target.exists() and any(target.iterdir()) and not force:
        raise DownloadError(f"{target}: exists but is incomplete; remove it or pass --force to replace it")
    total = sum(size for _, _, size in dataset.files.values())
    with (
        atomic_directory(target.with_name(f"{name}.download"), complete="README.md") as tmp,
        tqdm(total=total, unit="B", unit_scale=True, desc=f"{name} ({dataset.license})", disable=None) as bar,
    ):
        for local, (repo_path, sha, size) in dataset.files.items():
            _fetch(f"{base_url.rstrip('/')}/{dataset.commit}/{repo_path}", tmp / local, sha, size, bar, timeout)
    staged = target.with_name(f"{name}.download")
    if target.exists():  # --force over an old copy: swap only once the new one is complete
        old = target.with_name(f"{name}.old")
        target.rename(old)
        staged.rename(target)
        shutil.rmtree(old)
    else:
        staged.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(
        prog="hybrid_retrieval.data.download", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("datasets", nargs="*", help=f"any of {', '.join(DATASETS)} (default: both)")
    ap.add_argument("--dest", type=Path, default=None, help=f"target folder (default: {data_cache_dir()})")
    ap.add_argument("--base-url", default=BASE_URL, help="a mirror laid out as <commit>/<path in the repository>")
    ap.add_argument("--force", action="store_true", help="download again even if a complete copy is there")
    args = ap.parse_args(argv)
    dest = args.dest if args.dest is not None else data_cache_dir()
    with user_errors():
        for name in args.datasets or list(DATASETS):
            path = download(name, dest, args.base_url, force=args.force)
            print(f"{name}: {path} ({len(DATASETS[name].files)} files verified; license {DATASETS[name].license})")
    if args.dest is not None and dest.resolve() != data_cache_dir().resolve():
        print(f"use it with: paths.data_dir={dest}  (or export HYBRID_RETRIEVAL_DATA={dest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
