"""No model is scored on an image it learned from: data sets described as manifest selections, compared by content.

A chapter describes the data each trained model saw as *selections* of the committed manifests — ``{"manifest":
"pbc5", "where": {"split": ["train"]}}`` is the training split of PBC-5, ``{"manifest": "zheng2", "where": {"fold5":
["2", "3", "4"]}}`` three folds of Zheng's Dataset 2 — and passes them to ``wbcstudy.results.write_results`` as
``data_sets={model: {"train": [...], "val": [...], "eval": {set name: [...]}}}``; ``"except": [selections]`` removes
rows (by source file). A selection names whole manifest rows, so a model that trained on a subset of them is
described by a superset: the check can only be stricter.

:func:`shared_images` resolves each selection to the source files of its rows (a BCCD crop to the smear it was cut
from, a Zheng cell to its image) and those to their sha256 in the datasets' inventories — the same content hashes
the Data chapter's duplicate finder uses — so the same image under two paths (a duplicate file, a dataset that
re-distributes another's images) is caught too. ``wbcstudy check`` fails on any model whose evaluation sets share an
image with its training or validation data (``check_leaks``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

import pandas as pd

#: The inventories (``data/manifests/<key>_inventory.csv``) that hold each source file's sha256.
INVENTORIES: tuple[str, ...] = ("pbc", "zheng2018", "bccd", "all_idb2", "wbcatt")


class LeakError(ValueError):
    """A data-set description that cannot be resolved: names the manifest, the column or the file."""


@lru_cache(maxsize=1)
def _hash_of() -> dict[str, str]:
    """Data-root-relative source path -> sha256, over every inventory that exists."""
    from wbcstudy.data.construct import load_manifest

    table: dict[str, str] = {}
    for key in INVENTORIES:
        try:
            inv = load_manifest(f"{key}_inventory")
        except FileNotFoundError:
            continue
        table.update(zip(inv["path"].astype(str), inv["sha256"].astype(str)))
    return table


def selection_paths(selection: Mapping, manifests: Mapping[str, pd.DataFrame] | None = None) -> list[str]:
    """The source files of the manifest rows a selection names: each ``where`` column among its listed values, less
    the files of the selections listed under ``except`` (HemaX's WBCAtt training rows without PBC-5's test cells)."""
    from wbcstudy.data.construct import load_manifest

    if not isinstance(selection, Mapping) or "manifest" not in selection:
        raise LeakError(f"a data-set selection is {{'manifest': name, 'where': {{column: [values]}}}}, "
                        f"got {selection!r}")
    name = str(selection["manifest"])
    df = manifests[name] if manifests is not None and name in manifests else load_manifest(name)
    keep = pd.Series(True, index=df.index)
    for column, values in (selection.get("where") or {}).items():
        if column not in df.columns:
            raise LeakError(f"manifest {name!r} has no column {column!r} (a data-set selection filters on it)")
        wanted = {str(v) for v in (values if isinstance(values, (list, tuple, set)) else [values])}
        keep &= df[column].astype(str).isin(wanted)
    column = "path" if "path" in df.columns else "image_path"  # BCCD's rows are boxes on a smear: its image_path
    if column not in df.columns:
        raise LeakError(f"manifest {name!r} has neither a path nor an image_path column")
    removed = {p for other in selection.get("except") or [] for p in selection_paths(other, manifests)}
    return sorted(set(df.loc[keep, column].astype(str)) - removed)


def content_hashes(paths: Iterable[str], hash_of: Mapping[str, str] | None = None) -> dict[str, str]:
    """sha256 -> one path of it, for source files; a file no inventory knows is an error that names it."""
    table = _hash_of() if hash_of is None else hash_of
    out: dict[str, str] = {}
    for path in paths:
        if path not in table:
            raise LeakError(f"{path} is in no dataset inventory (data/manifests/*_inventory.csv): run "
                            f"`wbcstudy data build`, or describe the data set by a manifest that lists it")
        out.setdefault(table[path], path)
    return out


def shared_images(data_sets: Mapping, manifests: Mapping[str, pd.DataFrame] | None = None,
                  hash_of: Mapping[str, str] | None = None) -> list[dict]:
    """Every (model, evaluation set) whose images overlap the model's training or validation data, by content.

    ``data_sets`` is a results file's ``{model: {"train": [selections], "val": [selections], "eval": {name:
    [selections]}}}``. Returns one row per leak: model, evaluation set, the number of shared images and one example
    path on each side.
    """
    leaks = []
    for model, sets in data_sets.items():
        seen = {}
        for part in ("train", "val"):
            for selection in sets.get(part) or []:
                seen.update(content_hashes(selection_paths(selection, manifests), hash_of))
        for name, selections in (sets.get("eval") or {}).items():
            scored = {}
            for selection in selections:
                scored.update(content_hashes(selection_paths(selection, manifests), hash_of))
            shared = sorted(set(scored) & set(seen))
            if shared:
                leaks.append({"model": model, "eval": name, "shared": len(shared), "eval_path": scored[shared[0]],
                              "train_path": seen[shared[0]]})
    return leaks


def leak_sentence(leak: Mapping) -> str:
    """One leak as a sentence: the model, the set, how many images and an example of each side."""
    return (f"{leak['model']} is scored on {leak['shared']} image(s) of {leak['eval']!r} that it trained or validated "
            f"on (e.g. {leak['eval_path']}, the same content as {leak['train_path']})")
