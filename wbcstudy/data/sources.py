"""Where each dataset is published, where it must lie under the data root, and how to fetch and verify it."""
from __future__ import annotations

import csv
import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from wbcstudy.paths import data_root, manifests_dir

#: Image files, by suffix: the content check and verify decode them.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Expect:
    """What one part of a dataset must hold: how many files match a glob taken from the dataset's folder (hidden
    files, such as PBC's ``neutrophil/.DS_169665.jpg``, are not counted), and the sizes its images may have."""

    pattern: str
    count: int
    #: the (width, height) each image may have; empty: any
    sizes: tuple[tuple[int, int], ...] = ()
    #: the largest (width, height) an image may have, where the documented size is a bound (Zheng Dataset 1, ALL-IDB2)
    max_size: tuple[int, int] | None = None

    def size_ok(self, width: int, height: int) -> bool:
        """Whether an image of this size is one the dataset documents."""
        if self.sizes and (width, height) not in self.sizes:
            return False
        return self.max_size is None or (width <= self.max_size[0] and height <= self.max_size[1])

    def size_text(self) -> str:
        """The documented sizes, as words."""
        if self.sizes:
            return " or ".join(f"{w}x{h}" for w, h in self.sizes)
        return f"at most {self.max_size[0]}x{self.max_size[1]}" if self.max_size else "any size"


#: PBC as published: the count of each class folder (taken from the files) and the two sizes of the original JPEGs.
PBC_COUNTS: dict[str, int] = {"basophil": 1218, "eosinophil": 3117, "erythroblast": 1551, "ig": 2895,
                              "lymphocyte": 1214, "monocyte": 1420, "neutrophil": 3329, "platelet": 2348}
PBC_SIZES: tuple[tuple[int, int], ...] = ((360, 363), (366, 369))


@dataclass(frozen=True)
class DatasetSource:
    """One dataset: its place under the data root, where it is published, its licence and citation."""

    key: str
    title: str
    folder: str
    homepage: str
    download_url: str | None
    #: sha256 of the archive at download_url, or ``None`` = not recorded. Required: every entry must say it.
    #: When ``None``, ``fetch`` checks the download by its content (``expected``, the inventory's sha256) and records
    #: the archive's sha256 in the data root's lock file, against which later downloads are compared.
    sha256: str | None
    licence: str
    citation: str
    bibtex_key: str
    layout: str
    how_to_verify: str
    #: what the dataset's folder must hold (file counts, image sizes): checked on every download before it is kept
    expected: tuple[Expect, ...] = ()
    #: sizes of the original release's images where the inventory holds another form (PBC: the mirror's 256x256
    #: crops): a file whose sha256 differs is still accepted when it decodes at one of these sizes and holds
    #: ``crop_window``
    original_sizes: tuple[tuple[int, int], ...] = ()
    #: (x, y, width, height) of the window the study takes from an original image
    crop_window: tuple[int, int, int, int] | None = None
    #: files no download provides, (path under the dataset's folder, how to get it): BCCD's Kaggle labels
    manual: tuple[tuple[str, str], ...] = field(default=())
    #: the manual steps for a dataset without a public download
    how_to_get: str | None = None


SOURCES: dict[str, DatasetSource] = {
    "pbc": DatasetSource(
        key="pbc",
        title="PBC: peripheral blood cell images (Hospital Clinic Barcelona, CellaVision DM96)",
        folder="pbc/PBC_dataset_normal_DIB",
        homepage="https://data.mendeley.com/datasets/snkd93bnjr/1",
        download_url="https://prod-dcd-datasets-cache-zipfiles.s3.eu-west-1.amazonaws.com/snkd93bnjr-1.zip",
        sha256=None,  # not yet recorded: fetch checks the content and records the hash in the data root's lock file
        licence="CC BY 4.0",
        citation=(
            "Acevedo A., Merino A., Alferez S., Molina A., Boldu L., Rodellar J. "
            "A dataset of microscopic peripheral blood cell images for development of automatic "
            "recognition systems. Data in Brief 30:105474 (2020). doi:10.1016/j.dib.2020.105474; "
            "data: Mendeley Data, V1, doi:10.17632/snkd93bnjr.1"
        ),
        bibtex_key="acevedo2020pbc",
        layout=(
            "pbc/PBC_dataset_normal_DIB/<class>/<file>.jpg with class folders basophil, eosinophil, "
            "erythroblast, ig, lymphocyte, monocyte, neutrophil, platelet (the original JPEGs, 360x363 or "
            "366x369, or the mirror's 256x256 crops: all are read)"
        ),
        how_to_verify=(
            "Run `wbcstudy data verify pbc`: every file of data/manifests/pbc_inventory.csv must be there and "
            "either have its sha256 (the project's mirror, whose JPEGs are lossless 256x256 crops) or be a "
            "decodable original JPEG of 360x363 or 366x369 that holds the 256x256 window at (48, 48) the study "
            "reads (a Mendeley download); 17,092 images in 8 classes."
        ),
        expected=tuple(Expect(f"{label}/*.jpg", n, PBC_SIZES) for label, n in PBC_COUNTS.items()),
        original_sizes=PBC_SIZES,
        crop_window=(48, 48, 256, 256),
    ),
    "wbcatt": DatasetSource(
        key="wbcatt",
        title="WBCAtt: morphological attributes of PBC white blood cells",
        folder="wbcatt",
        homepage="https://github.com/apple2373/wbcatt",
        download_url="https://github.com/apple2373/wbcatt/archive/refs/heads/main.zip",
        sha256=None,  # not yet recorded: fetch checks the content and records the hash in the data root's lock file
        licence="MIT",
        citation=(
            "Tsutsui S., Pang W., Wen B. WBCAtt: A White Blood Cell Dataset Annotated with Detailed "
            "Morphological Attributes. Advances in Neural Information Processing Systems (NeurIPS) "
            "36, Datasets and Benchmarks Track (2023). arXiv:2306.13531"
        ),
        bibtex_key="tsutsui2023wbcatt",
        layout="wbcatt/pbc_attr_v1_{train,val,test}.csv (their path column names a file under pbc/)",
        how_to_verify=(
            "Run wbcstudy.data.verify('wbcatt') against data/manifests/wbcatt_inventory.csv; "
            "the three CSVs hold 6,169 / 1,030 / 3,099 rows."
        ),
        expected=(Expect("pbc_attr_v1_*.csv", 3),),
    ),
    "zheng2018": DatasetSource(
        key="zheng2018",
        title="Zheng et al. WBC segmentation datasets 1 and 2",
        folder="zheng2018",
        homepage="https://github.com/zxaoyou/segmentation_WBC",
        download_url="https://github.com/zxaoyou/segmentation_WBC/archive/refs/heads/master.zip",
        sha256=None,  # not yet recorded: fetch checks the content and records the hash in the data root's lock file
        licence="GPL-3.0 (repository); acknowledge Jiangxi Tecom (Dataset 1) and the CellaVision blog (Dataset 2)",
        citation=(
            "Zheng X., Wang Y., Wang G., Liu J. Fast and robust segmentation of white blood cell "
            "images by self-supervised learning. Micron 107:55-71 (2018). "
            "doi:10.1016/j.micron.2018.01.010"
        ),
        bibtex_key="zheng2018micron",
        layout=(
            "zheng2018/Dataset 1/NNN.bmp + NNN.png (mask), zheng2018/Dataset 2/..., and "
            "zheng2018/Class Labels of Dataset {1,2}.csv"
        ),
        how_to_verify=(
            "Run wbcstudy.data.verify('zheng2018') against data/manifests/zheng2018_inventory.csv "
            "(300 BMP images of at most 120x120 and 100 of 300x300, each with a PNG mask of its size)."
        ),
        expected=(
            Expect("Dataset 1/*.bmp", 300, max_size=(120, 120)),
            Expect("Dataset 1/*.png", 300, max_size=(120, 120)),
            Expect("Dataset 2/*.bmp", 100, ((300, 300),)),
            Expect("Dataset 2/*.png", 100, ((300, 300),)),
            Expect("Class Labels of Dataset *.csv", 2),
        ),
    ),
    "bccd": DatasetSource(
        key="bccd",
        title="BCCD: blood cell count and detection (blood-smear images, Pascal VOC boxes)",
        folder="bccd",
        homepage="https://github.com/Shenggan/BCCD_Dataset",
        download_url="https://github.com/Shenggan/BCCD_Dataset/archive/refs/heads/master.zip",
        sha256=None,  # not yet recorded: fetch checks the content and records the hash in the data root's lock file
        licence="MIT",
        citation=(
            "Shenggan. BCCD Dataset: a small-scale dataset for blood cells detection (2017). "
            "https://github.com/Shenggan/BCCD_Dataset; WBC subtype labels (labels.csv) from "
            "P. Mooney, Kaggle 'blood-cells' dataset (dataset-master/labels.csv), "
            "https://www.kaggle.com/datasets/paultimothymooney/blood-cells"
        ),
        bibtex_key="bccd2017",
        layout=(
            "bccd/BCCD/{Annotations,ImageSets/Main,JPEGImages}/ from the GitHub archive, and "
            "bccd/labels.csv from the Kaggle 'blood-cells' dataset-master folder (needs a Kaggle login)"
        ),
        how_to_verify=(
            "Run wbcstudy.data.verify('bccd') against data/manifests/bccd_inventory.csv "
            "(364 JPEGs 640x480 with 364 VOC annotations, and labels.csv)."
        ),
        expected=(
            Expect("BCCD/JPEGImages/*.jpg", 364, ((640, 480),)),
            Expect("BCCD/Annotations/*.xml", 364),
            Expect("BCCD/ImageSets/Main/*.txt", 4),
        ),
        manual=((
            "labels.csv",
            "the WBC subtype labels are only on Kaggle: sign in at "
            "https://www.kaggle.com/datasets/paultimothymooney/blood-cells, download the dataset and copy its "
            "dataset-master/labels.csv to {path}",
        ),),
    ),
    "all_idb2": DatasetSource(
        key="all_idb2",
        title="ALL-IDB2: acute lymphoblastic leukaemia image database, part 2 (with Banik et al. masks)",
        folder="all_idb2",
        homepage="https://scotti.di.unimi.it/all/",
        download_url=None,
        sha256=None,  # no public download
        licence="research use only; not to be redistributed; request access from the authors and cite",
        citation=(
            "Labati R. D., Piuri V., Scotti F. ALL-IDB: the acute lymphoblastic leukemia image "
            "database for image processing. 18th IEEE International Conference on Image Processing "
            "(ICIP), 2045-2048 (2011). doi:10.1109/ICIP.2011.6115881; masks: Banik P. P., Saha R., "
            "Kim K.-D. An automatic nucleus segmentation and CNN model based classification method "
            "of white blood cell. Expert Systems with Applications 149:113211 (2020)"
        ),
        bibtex_key="labati2011allidb",
        layout=(
            "all_idb2/images/ImNNN_Y.png (Y=1 blast, Y=0 normal; the published TIFFs converted "
            "losslessly to PNG) and all_idb2/masks/ImNNN_Y.png"
        ),
        how_to_verify=(
            "Run wbcstudy.data.verify('all_idb2') against data/manifests/all_idb2_inventory.csv "
            "(260 images of at most 257x257, 130 blasts and 130 normal, each with a mask)."
        ),
        expected=(
            Expect("images/Im*_1.png", 130, max_size=(257, 257)),
            Expect("images/Im*_0.png", 130, max_size=(257, 257)),
            Expect("masks/Im*.png", 260, max_size=(257, 257)),
        ),
        how_to_get=(
            "request ALL-IDB2 from its authors at https://scotti.di.unimi.it/all/ (research use only, not to be "
            "redistributed), save each ALL_IDB2 image ImNNN_Y.tif as {path}/images/ImNNN_Y.png (lossless, e.g. "
            "PIL's Image.open(tif).save(png)) and Banik et al.'s mask of it as {path}/masks/ImNNN_Y.png, then run "
            "`wbcstudy data verify all_idb2`"
        ),
    ),
}


class DatasetMissing(FileNotFoundError):
    """A dataset is not where the project looks for it, is incomplete, or cannot be fetched.

    The first line of the message is complete on its own (what is wrong, what to do): the command line prints
    only that line; the lines after it give the details (where it is published, licence, layout).
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    @property
    def summary(self) -> str:
        """The message's first line."""
        return str(self).splitlines()[0] if str(self) else ""


#: The former name of ``DatasetMissing`` (the same class).
DatasetNotFoundError = DatasetMissing


def unknown_dataset_message(key: str) -> str:
    """One line for a dataset key that is not in the registry."""
    return f"unknown dataset {key!r}; datasets are: {', '.join(SOURCES)} (see `wbcstudy data sources`)"


def _source(key: str) -> DatasetSource:
    """The registry entry for key, or a KeyError listing the known keys."""
    try:
        return SOURCES[key]
    except KeyError:
        raise KeyError(unknown_dataset_message(key)) from None


def what_to_do(key: str) -> str:
    """The one thing to do about a missing dataset, in a few words."""
    src = _source(key)
    if src.download_url is None:
        steps = (src.how_to_get or f"request it from {src.homepage} and place it at {{path}}").format(
            path=data_root() / src.folder)
        return f"it has no public download: {steps}; or set WBCSTUDY_DATA to a folder that holds it"
    return (f"run `wbcstudy data fetch {key}` (it checks the download), or set WBCSTUDY_DATA to a folder "
            "that holds it")


def missing_message(key: str, reason: str | None = None) -> str:
    """The help text for a dataset that is not in place: a self-sufficient first line, then the details."""
    src = _source(key)
    target = data_root() / src.folder
    how = (
        f"download it from {src.download_url} (or run `wbcstudy data fetch {key}`)"
        if src.download_url
        else f"it has no public download: request it from {src.homepage}"
    )
    lines = [
        f"dataset {key!r} not found at {target}: {what_to_do(key)}.",
        f"{src.title}.",
        *([reason] if reason else []),
        f"It is published at {src.homepage}; {how}.",
        f"Licence: {src.licence}.",
        f"Place it so that the layout is: {src.layout}, under the data root {data_root()} "
        f"(i.e. the folder {target}).",
        "The data root is the environment variable WBCSTUDY_DATA, else data/raw/ in the project; "
        "set WBCSTUDY_DATA to point at another folder that holds the datasets.",
    ]
    return "\n".join(lines)


def incomplete(key: str, what: str) -> DatasetMissing:
    """The error for a dataset whose folder exists but lacks a file or folder it must have."""
    src = _source(key)
    return DatasetMissing(
        f"dataset {key!r} at {data_root() / src.folder} is incomplete ({what}): check it with "
        f"`wbcstudy data verify {key}` and fetch or copy it again\n" + missing_message(key), key)


def locate(key: str) -> Path:
    """The dataset's folder under data_root(); DatasetMissing with placement instructions if missing."""
    src = _source(key)
    path = data_root() / src.folder
    if not path.is_dir():
        raise DatasetMissing(missing_message(key), key)
    return path


# ---------------------------------------------------------------- content checks


def inventory_path(key: str) -> Path:
    """The committed checksum inventory of a dataset."""
    return manifests_dir() / f"{key}_inventory.csv"


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def image_size(path: Path) -> tuple[int, int] | str:
    """(width, height) of an image that decodes completely, else the error as text.

    JPEGs are decoded at 1/8 scale, which still reads every entropy-coded byte, so a truncated file is caught.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            img.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file; each is reported
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return width, height


def is_original(src: DatasetSource, path: Path) -> bool:
    """Whether a file is a decodable image of the original release: one of ``src.original_sizes``, holding the
    window the study crops."""
    if not src.original_sizes:
        return False
    size = image_size(path)
    if isinstance(size, str) or size not in src.original_sizes:
        return False
    if src.crop_window is None:
        return True
    x, y, w, h = src.crop_window
    return x + w <= size[0] and y + h <= size[1]


def _inventory_rows(key: str) -> list[dict[str, str]]:
    inv = inventory_path(key)
    if not inv.is_file():
        raise FileNotFoundError(f"no checksum inventory {inv}: run `wbcstudy data build` first")
    with open(inv, newline="") as fh:
        return list(csv.DictReader(fh))


def _visible(paths) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and not p.name.startswith("."))


def check_content(key: str, folder: Path | None = None) -> list[str]:
    """Check a dataset's folder by its content; return the problems found (empty if none).

    What ``SOURCES[key].expected`` says: the number of files of each part, and that every image among them decodes
    at a documented size; then every one of those files that the committed inventory lists must have its sha256,
    or (PBC, whose inventory holds the mirror's crops) be a decodable original holding the study's window.
    ``folder`` is laid out as ``data_root() / SOURCES[key].folder`` (default: that folder).
    """
    src = _source(key)
    folder = data_root() / src.folder if folder is None else folder
    problems: list[str] = []
    checked: set[str] = set()
    for part in src.expected:
        files = _visible(folder.glob(part.pattern))
        if len(files) != part.count:
            problems.append(f"{part.pattern}: {len(files)} file(s), expected {part.count}")
        for path in files:
            rel = path.relative_to(folder).as_posix()
            checked.add(rel)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            size = image_size(path)
            if isinstance(size, str):
                problems.append(f"does not decode: {rel} ({size})")
            elif not part.size_ok(*size):
                problems.append(f"wrong size: {rel} is {size[0]}x{size[1]}, expected {part.size_text()}")
    prefix = src.folder.rstrip("/") + "/"
    try:
        rows = _inventory_rows(key)
    except FileNotFoundError:
        rows = []  # no inventory (an installed package without it): the counts and decoding above still hold
    inv_name = inventory_path(key).name
    for row in rows:
        rel = row["path"][len(prefix):] if row["path"].startswith(prefix) else None
        if rel is None or rel not in checked:
            continue
        path = folder / rel
        if sha256_file(path) != row["sha256"] and not is_original(src, path):
            problems.append(f"changed: {rel} (sha256 differs from {inv_name})")
    return problems


@dataclass
class VerifyReport:
    """What ``verify`` found: the problems, and how many files matched their inventory sha256 or were originals."""

    problems: list[str]
    matched: int = 0
    originals: int = 0

    def describe(self) -> str:
        """The kinds of files found, in words."""
        parts = [f"{self.matched} file(s) match the inventory sha256"]
        if self.originals:
            parts.append(f"{self.originals} are decodable original images of the documented sizes")
        return ", ".join(parts)


def verify_report(key: str) -> VerifyReport:
    """Compare the dataset's files with the committed inventory: each file must be there and have its sha256, or
    (PBC) be a decodable original of a documented size that holds the window the study crops; extra files are
    reported too."""
    src = _source(key)
    locate(key)
    rows = _inventory_rows(key)
    inv_name = inventory_path(key).name
    root = data_root()
    report = VerifyReport([])
    listed: set[str] = set()
    sizes = " or ".join(f"{w}x{h}" for w, h in src.original_sizes)
    for row in rows:
        rel = row["path"]
        listed.add(rel)
        path = root / rel
        if not path.is_file():
            report.problems.append(f"missing: {rel}")
        elif sha256_file(path) == row["sha256"]:
            report.matched += 1
        elif is_original(src, path):
            report.originals += 1
        else:
            also = f", and it is not a decodable original of {sizes}" if src.original_sizes else ""
            report.problems.append(f"changed: {rel} (sha256 differs from {inv_name}{also})")
    for path in sorted(p for p in (root / src.folder).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            report.problems.append(f"unexpected: {rel} (not in {inv_name})")
    for rel, how in src.manual:
        if f"{src.folder}/{rel}" in listed and not (root / src.folder / rel).is_file():
            report.problems.append(f"to do by hand: {how.format(path=root / src.folder / rel)}")
    return report


def verify(key: str) -> list[str]:
    """The problems ``verify_report`` finds (empty if none)."""
    return verify_report(key).problems


# ---------------------------------------------------------------- fetch

#: The lock file, in the data root (never in the repository): key -> {url, sha256, fetched} of each archive that
#: was fetched without a recorded sha256 and passed the content check.
LOCK_NAME = ".wbcstudy-archives.lock"

#: Hosts a plain-HTTP URL may name (a test server or a local mirror); any other download must be HTTPS or file://.
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# where each downloaded archive keeps the dataset: (file marking the folder to copy, target relative to data root)
_INSTALL: dict[str, tuple[str, str]] = {
    "pbc": ("basophil", "pbc/PBC_dataset_normal_DIB"),
    "wbcatt": ("pbc_attr_v1_train.csv", "wbcatt"),
    "zheng2018": ("Class Labels of Dataset 1.csv", "zheng2018"),
    "bccd": ("BCCD", "bccd"),
}


def lock_path() -> Path:
    """The data root's lock file of fetched archives."""
    return data_root() / LOCK_NAME


def read_lock() -> dict[str, dict[str, str]]:
    """The lock file's entries (empty when there is none)."""
    path = lock_path()
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise DatasetMissing(f"the lock file {path} is not valid ({exc}): delete it and run `wbcstudy data fetch` "
                             "again (each archive is then checked by its content)") from None
    return entries


def _record_lock(key: str, url: str, sha256: str) -> Path:
    path = lock_path()
    entries = read_lock()
    entries[key] = {"url": url, "sha256": sha256,
                    "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _extract_all(archive: Path, into: Path) -> None:
    """Unpack a zip archive, and any zip archives inside it, into a folder."""
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(into)
    for inner in sorted(into.rglob("*.zip")):
        _extract_all(inner, inner.with_suffix(""))
        inner.unlink()


def _check_url(key: str, url: str) -> None:
    """Refuse a download that is not over HTTPS (file:// and plain HTTP to this machine are allowed)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("https", "file") or (parsed.scheme == "http" and parsed.hostname in _LOCAL_HOSTS):
        return
    raise DatasetMissing(f"refusing to fetch {key!r}: {url} is not an HTTPS address; download it yourself from "
                         f"{_source(key).homepage} and check it with `wbcstudy data verify {key}`\n"
                         + missing_message(key), key)


def _download(key: str, url: str, expected: str | None, where: str, progress: bool) -> Path:
    """Download url into the data root's .downloads/; compared with the expected sha256 when there is one."""
    downloads = data_root() / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    mismatch = (f"refusing to unpack {key!r}: the file downloaded from {url} does not have the recorded sha256 "
                f"{expected} ({where}; the file was deleted)")
    try:
        if url.startswith("file:"):
            source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
            archive = downloads / source.name
            shutil.copyfile(source, archive)
            if expected and sha256_file(archive) != expected:
                archive.unlink()
                raise ValueError("sha256 differs")
            return archive
        import pooch

        logger = pooch.get_logger()
        level = logger.level
        logger.setLevel(logging.WARNING)  # pooch logs the download and its hash as INFO on stderr
        try:
            return Path(pooch.retrieve(url, known_hash=f"sha256:{expected}" if expected else None,
                                       path=downloads, progressbar=progress))
        finally:
            logger.setLevel(level)
    except Exception as exc:  # network errors come in many types (requests, OSError, HTTP status)
        _remove_empty(downloads)
        if expected and isinstance(exc, ValueError):  # the file's hash does not match (pooch removes the file)
            raise DatasetMissing(mismatch + "\n" + missing_message(key, str(exc)), key) from exc
        raise DatasetMissing(
            f"downloading {key!r} from {url} failed ({type(exc).__name__}): check the connection "
            "and try again, or place the dataset yourself\n"
            + missing_message(key, f"Downloading {url} failed: {type(exc).__name__}: {exc}"), key
        ) from exc


def _remove_empty(folder: Path) -> None:
    with_files = folder.is_dir() and any(folder.iterdir())
    if folder.is_dir() and not with_files:
        folder.rmdir()


def _manual_steps(key: str) -> None:
    """Raise DatasetMissing naming the manual step when a file no download provides is not in place."""
    src = _source(key)
    target = data_root() / src.folder
    todo = [how.format(path=target / rel) for rel, how in src.manual if not (target / rel).is_file()]
    if todo:
        raise DatasetMissing(
            f"dataset {key!r} at {target} is incomplete: {'; '.join(todo)}\n"
            + missing_message(key, "The download was checked and installed; " + "; ".join(todo) + "."), key)


def content_failure(key: str, url: str, problems: list[str]) -> str:
    """The message for a download that failed its content check: one line naming the dataset and what differed."""
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return (f"refusing to install {key!r}: the archive from {url} failed the content check ({len(problems)} "
            f"problem(s): {shown}); the archive and what was unpacked were deleted: try `wbcstudy data fetch {key}` "
            f"later, or download it yourself from {_source(key).homepage}")


def fetch(key: str, progress: bool = False, report=print) -> Path:
    """Download a dataset's archive, check it, and unpack it into data_root(); returns the dataset's folder.

    Nothing is downloaded when the folder is already in place, and a dataset without a public download is refused
    (``DatasetMissing``, with the manual steps). The archive is compared with the entry's sha256 when one is
    recorded, else with the data root's lock file (``LOCK_NAME``) when an earlier fetch recorded it there; without
    either it is downloaded over HTTPS and checked by its content (``check_content``), and its sha256 is then
    recorded in the lock file and reported (for a maintainer to record in ``SOURCES``). A download that fails a
    check is deleted with everything unpacked from it and raises ``DatasetMissing`` whose first line names the
    dataset and what differed. Files no download provides (BCCD's labels) raise ``DatasetMissing`` naming the
    manual step, with the rest in place.
    """
    src = _source(key)
    root = data_root()
    target = root / src.folder
    if target.is_dir():
        _manual_steps(key)
        return target
    if src.download_url is None:
        raise DatasetMissing(missing_message(key, "It cannot be downloaded automatically."), key)
    url = src.download_url
    _check_url(key, url)
    entry = read_lock().get(key)
    locked = entry["sha256"] if entry and entry.get("url") == url and entry.get("sha256") else None
    expected = src.sha256 or locked
    where = ("recorded in wbcstudy.data.SOURCES" if src.sha256 else
             f"recorded in {lock_path()} on {entry.get('fetched', '?')}; if the publisher changed the archive, "
             f"delete the {key!r} entry of that file and fetch again to check the new one by its content"
             if locked else "")
    root.mkdir(parents=True, exist_ok=True)
    archive = _download(key, url, expected, where, progress)
    marker, dest = _INSTALL[key]
    try:
        digest = sha256_file(archive)
        with tempfile.TemporaryDirectory(dir=root, prefix=".unpacking-") as tmp:
            try:
                _extract_all(archive, Path(tmp))
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise DatasetMissing(
                    f"refusing to install {key!r}: the archive from {url} cannot be unpacked ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else 'truncated'}); it is truncated or damaged and was "
                    f"deleted: run `wbcstudy data fetch {key}` again\n" + missing_message(key), key) from exc
            hits = sorted(Path(tmp).rglob(marker), key=lambda p: len(p.parts))
            if not hits:
                raise DatasetMissing(
                    f"refusing to install {key!r}: the archive from {url} holds no {marker!r}, so its layout is not "
                    f"the published one; it was deleted: place the dataset yourself\n" + missing_message(key), key)
            found = hits[0].parent
            problems = check_content(key, found)
            if problems:
                raise DatasetMissing(content_failure(key, url, problems) + "\n" + "\n".join(problems[:50])
                                     + "\n" + missing_message(key), key)
            try:
                _install(key, found, root / dest)
            except BaseException:
                shutil.rmtree(root / dest, ignore_errors=True)
                raise
    finally:
        archive.unlink(missing_ok=True)
        _remove_empty(root / ".downloads")
    if not expected:
        lock = _record_lock(key, url, digest)
        report(f"{key}: content checked; sha256 {digest} of {url} recorded in {lock} (later fetches must match it; "
               f"a maintainer can record it as SOURCES[{key!r}].sha256)")
    _manual_steps(key)
    return target


def _install(key: str, found: Path, dest: Path) -> None:
    """Move the checked folder into place (BCCD: only its BCCD/ folder, licence and readme)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if key == "bccd":
        dest.mkdir(parents=True, exist_ok=True)
        shutil.move(str(found / "BCCD"), str(dest / "BCCD"))
        for extra in ("LICENSE", "README.md"):
            if (found / extra).is_file():
                shutil.move(str(found / extra), str(dest / extra))
    else:
        shutil.move(str(found), str(dest))
