"""Where each dataset is published, where it must lie under the data root, and how to fetch and verify it."""
from __future__ import annotations

import csv
import hashlib
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from wbcstudy.paths import data_root, manifests_dir


@dataclass(frozen=True)
class DatasetSource:
    """One dataset: its place under the data root, where it is published, its licence and citation."""

    key: str
    title: str
    folder: str
    homepage: str
    download_url: str | None
    #: sha256 of the archive at download_url; ``None`` = not known, and then ``fetch`` refuses to download
    #: (an unverified archive is never unpacked). Required: every entry must say it.
    sha256: str | None
    licence: str
    citation: str
    bibtex_key: str
    layout: str
    how_to_verify: str


SOURCES: dict[str, DatasetSource] = {
    "pbc": DatasetSource(
        key="pbc",
        title="PBC: peripheral blood cell images (Hospital Clinic Barcelona, CellaVision DM96)",
        folder="pbc/PBC_dataset_normal_DIB",
        homepage="https://data.mendeley.com/datasets/snkd93bnjr/1",
        download_url="https://prod-dcd-datasets-cache-zipfiles.s3.eu-west-1.amazonaws.com/snkd93bnjr-1.zip",
        sha256=None,  # not yet recorded: the archive was never downloaded where its hash could be taken
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
            "Run wbcstudy.data.verify('pbc'): it compares every file with the sha256 in "
            "data/manifests/pbc_inventory.csv (taken from the project's mirror, whose JPEGs are "
            "lossless 256x256 crops of the originals; a fresh Mendeley download has the uncropped "
            "originals, so compare class counts instead: 17,092 images in 8 classes)."
        ),
    ),
    "wbcatt": DatasetSource(
        key="wbcatt",
        title="WBCAtt: morphological attributes of PBC white blood cells",
        folder="wbcatt",
        homepage="https://github.com/apple2373/wbcatt",
        download_url="https://github.com/apple2373/wbcatt/archive/refs/heads/main.zip",
        sha256=None,  # not yet recorded: the archive was never downloaded where its hash could be taken
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
    ),
    "zheng2018": DatasetSource(
        key="zheng2018",
        title="Zheng et al. WBC segmentation datasets 1 and 2",
        folder="zheng2018",
        homepage="https://github.com/zxaoyou/segmentation_WBC",
        download_url="https://github.com/zxaoyou/segmentation_WBC/archive/refs/heads/master.zip",
        sha256=None,  # not yet recorded: the archive was never downloaded where its hash could be taken
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
            "(300 + 100 BMP images, each with a PNG mask)."
        ),
    ),
    "bccd": DatasetSource(
        key="bccd",
        title="BCCD: blood cell count and detection (blood-smear images, Pascal VOC boxes)",
        folder="bccd",
        homepage="https://github.com/Shenggan/BCCD_Dataset",
        download_url="https://github.com/Shenggan/BCCD_Dataset/archive/refs/heads/master.zip",
        sha256=None,  # not yet recorded: the archive was never downloaded where its hash could be taken
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
            "(364 JPEGs 640x480 with 364 VOC annotations)."
        ),
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
            "(260 images 257x257, 130 blasts and 130 normal)."
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
        return (f"it has no public download: request it from {src.homepage}, place it at {data_root() / src.folder}, "
                "or set WBCSTUDY_DATA to a folder that holds it")
    if src.sha256:
        return f"run `wbcstudy data fetch {key}`, or set WBCSTUDY_DATA to a folder that holds it"
    return (f"download it from {src.homepage} and place it there (layout: `wbcstudy data sources {key}`), "
            "or set WBCSTUDY_DATA to a folder that holds it")


def missing_message(key: str, reason: str | None = None) -> str:
    """The help text for a dataset that is not in place: a self-sufficient first line, then the details."""
    src = _source(key)
    target = data_root() / src.folder
    how = (
        f"download it from {src.download_url}" + (f" (or run `wbcstudy data fetch {key}`)" if src.sha256 else "")
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


# where each downloaded archive keeps the dataset: (file marking the folder to copy, target relative to data root)
_INSTALL: dict[str, tuple[str, str]] = {
    "pbc": ("basophil", "pbc/PBC_dataset_normal_DIB"),
    "wbcatt": ("pbc_attr_v1_train.csv", "wbcatt"),
    "zheng2018": ("Class Labels of Dataset 1.csv", "zheng2018"),
    "bccd": ("BCCD", "bccd"),
}


def _extract_all(archive: Path, into: Path) -> None:
    """Unpack a zip archive, and any zip archives inside it, into a folder."""
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(into)
    for inner in sorted(into.rglob("*.zip")):
        _extract_all(inner, inner.with_suffix(""))
        inner.unlink()


def fetch(key: str) -> Path:
    """Download a dataset's archive with pooch, check it against the entry's sha256, and unpack it into data_root().

    Refuses (``DatasetMissing``, before any download) when the entry has no download or no known sha256:
    an archive whose content cannot be verified is never fetched. A download whose sha256 differs is
    deleted and refused. Returns the dataset's folder (at once, if it is already in place).
    """
    src = _source(key)
    target = data_root() / src.folder
    if target.is_dir():
        return target
    if src.download_url is None:
        raise DatasetMissing(missing_message(key, "It cannot be downloaded automatically."), key)
    if not src.sha256:
        raise DatasetMissing(
            f"refusing to fetch {key!r}: no sha256 is recorded for {src.download_url}, so the download could not "
            f"be verified; download it yourself from {src.homepage}, place it at {target} and check it with "
            f"`wbcstudy data verify {key}`\n" + missing_message(key), key)
    import pooch

    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    try:
        archive = Path(pooch.retrieve(src.download_url, known_hash=f"sha256:{src.sha256}",
                                      path=root / ".downloads", progressbar=False))
    except ValueError as exc:  # pooch: the downloaded file's hash does not match (the file is removed)
        raise DatasetMissing(
            f"refusing to unpack {key!r}: the file downloaded from {src.download_url} does not have the recorded "
            f"sha256 {src.sha256} (it was deleted); try again later, or download and check it yourself\n"
            + missing_message(key, str(exc)), key) from exc
    except Exception as exc:  # network errors come in many types (requests, OSError, HTTP status)
        raise DatasetMissing(
            f"downloading {key!r} from {src.download_url} failed ({type(exc).__name__}): check the connection "
            "and try again, or place the dataset yourself\n"
            + missing_message(key, f"Downloading {src.download_url} failed: {type(exc).__name__}: {exc}"), key
        ) from exc
    marker, dest = _INSTALL[key]
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        _extract_all(archive, Path(tmp))
        hits = sorted(Path(tmp).rglob(marker), key=lambda p: len(p.parts))
        if not hits:
            raise DatasetMissing(
                f"the archive {archive} for {key!r} holds no {marker!r}: its layout is not the published one; "
                "place the dataset yourself\n" + missing_message(key), key)
        found = hits[0].parent
        if key == "bccd":
            (root / dest).mkdir(parents=True, exist_ok=True)
            shutil.copytree(found / "BCCD", root / dest / "BCCD")
            for extra in ("LICENSE", "README.md"):
                if (found / extra).is_file():
                    shutil.copy2(found / extra, root / dest / extra)
        else:
            (root / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(found, root / dest)
    if key == "bccd" and not (root / dest / "labels.csv").is_file():
        raise DatasetMissing(
            f"dataset 'bccd' is incomplete: the WBC subtype labels are only on Kaggle; put dataset-master/labels.csv "
            f"of the 'blood-cells' dataset at {root / dest / 'labels.csv'}\n"
            + missing_message(
                key,
                "The images and boxes were downloaded, but the WBC subtype labels are only on Kaggle: "
                f"put dataset-master/labels.csv of the 'blood-cells' dataset at {root / dest / 'labels.csv'}.",
            ), key)
    return target


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


def verify(key: str) -> list[str]:
    """Compare the dataset's files with the committed inventory's sha256; return the problems found (empty if none)."""
    src = _source(key)
    locate(key)
    inv = inventory_path(key)
    if not inv.is_file():
        raise FileNotFoundError(f"no checksum inventory {inv}: run `wbcstudy data build` first")
    root = data_root()
    problems: list[str] = []
    listed: set[str] = set()
    with open(inv, newline="") as fh:
        for row in csv.DictReader(fh):
            rel = row["path"]
            listed.add(rel)
            path = root / rel
            if not path.is_file():
                problems.append(f"missing: {rel}")
            elif sha256_file(path) != row["sha256"]:
                problems.append(f"changed: {rel} (sha256 differs from {inv.name})")
    folder = root / src.folder
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            problems.append(f"unexpected: {rel} (not in {inv.name})")
    return problems
