"""Many domains from one spec: fan-out by ``metadata.domains`` or ``domainSelector``, and Overlays.

After every file is loaded, each fanned-out Lookup document becomes one lookup per domain (a copy of
its model with ``metadata.domain`` set), so everything after loading sees ordinary ``domain/name``
lookups. Then each Overlay is merged onto the one lookup it names: mappings merge, scalars and lists
replace, ``null`` removes, and the result is validated like any Lookup. An Overlay's
``csv.patch`` (rows added or replaced by key from a CSV of the same columns, keys removed) is kept
on the lookup for the CSV checks, which build the domain's own CSV from the shared one.
"""

from __future__ import annotations

import atexit
import copy
import csv
import difflib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler.errors import Diagnostic
from reconciler.spec.csvcheck import abridged, csv_rows
from reconciler.spec.loader import LoadedLookup, LoadedOverlay, LoadResult
from reconciler.spec.messages import translate_validation_error
from reconciler.spec.model import CsvSource, LookupDocument


@dataclass(frozen=True)
class CsvPatch:
    """An Overlay's ``csv.patch``: a CSV of rows to add or replace by key, and keys to remove."""

    add: Path | None
    remove: tuple[str, ...]
    overlay: LoadedOverlay


def merge(base: Any, patch: Any) -> Any:
    """``patch`` merged onto ``base``: mappings merge, scalars and lists replace, None removes."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _targets(lookup: LoadedLookup, labels: dict[str, dict[str, str]]) -> list[str] | None:
    meta = lookup.model.metadata
    if meta.domains is not None:
        return list(meta.domains)
    if not (meta.domainSelector is not None):
        raise RuntimeError("invariant broken: meta.domainSelector is not None")
    wanted = meta.domainSelector.labels
    return sorted(
        name for name, have in labels.items() if all(have.get(k) == v for k, v in wanted.items())
    )


def expand_fan_out(result: LoadResult) -> None:
    """Replace fanned-out lookups by one per domain, and merge the Overlays onto them."""
    labels = {d.model.metadata.name: d.model.metadata.labels for d in result.domains}
    expanded: list[LoadedLookup] = []
    fanned: dict[str, LoadedLookup] = {}
    single: set[str] = set()
    for lookup in result.lookups:
        meta = lookup.model.metadata
        if not meta.fans_out:
            expanded.append(lookup)
            single.add(lookup.address)
            continue
        targets = _targets(lookup, labels)
        if not targets:
            # Never silently nothing: a typo'd label would leave the lookups unmanaged (and a
            # pruning Domain would then delete them).
            known = sorted({f"{k}={v}" for have in labels.values() for k, v in have.items()})
            result.diagnostics.append(
                lookup.diagnostic(
                    ("metadata", "domainSelector", "labels"),
                    f"domainSelector {meta.domainSelector.labels if meta.domainSelector else {}} "
                    "matches no Domain document",
                    hint="labels in use: " + ", ".join(known) if known else "no Domain has labels",
                )
            )
            continue
        for domain in targets:
            model = lookup.model.model_copy(
                update={
                    "metadata": meta.model_copy(
                        update={"domain": domain, "domains": None, "domainSelector": None}
                    )
                }
            )
            one = LoadedLookup(
                lookup.path, lookup.index, lookup.line, lookup.data, lookup.positions, model=model
            )
            expanded.append(one)
            fanned.setdefault(one.address, one)
    result.lookups = expanded
    merged: dict[str, LoadedOverlay] = {}
    for overlay in result.overlays:
        address = overlay.model.address
        target = fanned.get(address)
        if target is None:
            if address in single:
                message = f"{address} is not a fanned-out lookup: edit its own spec instead"
            else:
                message = f"the overlay of {address} matches no fanned-out lookup"
            close = difflib.get_close_matches(address, list(fanned), n=1)
            result.diagnostics.append(
                overlay.diagnostic(
                    ("metadata", "name"),
                    message,
                    hint=f"did you mean {close[0]!r}?"
                    if close
                    else "fanned-out lookups: " + (", ".join(sorted(fanned)[:8]) or "none"),
                )
            )
            continue
        if address in merged:
            first = merged[address]
            result.diagnostics.append(
                overlay.diagnostic(
                    ("metadata", "name"),
                    f"{address} already has an overlay at {first.path}:{first.line}",
                    hint="one Overlay per domain and lookup",
                )
            )
            continue
        merged[address] = overlay
        _apply(target, overlay, result)


def _apply(target: LoadedLookup, overlay: LoadedOverlay, result: LoadResult) -> None:
    patch = copy.deepcopy(overlay.model.spec)
    csv_patch = None
    csv_block = patch.get("csv")
    if isinstance(csv_block, dict) and "patch" in csv_block:
        raw = csv_block.pop("patch") or {}
        if not csv_block:
            patch.pop("csv")
        csv_patch = _csv_patch(raw, overlay, result)
        if csv_patch is None:
            return
    spec = merge(target.data.get("spec") or {}, patch)
    meta = target.model.metadata
    metadata: dict[str, object] = {"domain": meta.domain, "name": meta.name}
    if meta.labels:
        metadata["labels"] = dict(meta.labels)
    data = {**target.data, "metadata": metadata, "spec": spec}
    try:
        model = LookupDocument.model_validate(data)
    except ValidationError as exc:
        result.diagnostics.extend(translate_validation_error(overlay, LookupDocument, exc))
        return
    target.model = model
    target.data = data  # the spec hash then covers the overlay: a saved plan sees its edits
    target.overlay = f"{overlay.path}:{overlay.line}"
    target.csv_patch = csv_patch
    if csv_patch is not None and target.csv_path() is None:
        result.diagnostics.append(
            overlay.diagnostic(
                ("spec", "csv", "patch"),
                "csv.patch needs a csv.file lookup",
                hint="rows of a CSV in S3 or of a query cannot be patched here",
            )
        )


def _csv_patch(raw: Any, overlay: LoadedOverlay, result: LoadResult) -> CsvPatch | None:
    at = ("spec", "csv", "patch")
    if not isinstance(raw, dict) or set(raw) - {"add", "remove"}:
        result.diagnostics.append(
            overlay.diagnostic(
                at,
                "csv.patch takes 'add' (a CSV file) and 'remove' (a list of keys)",
                hint="e.g. patch: {add: data/extra.csv, remove: ['10.0.0.9']}",
            )
        )
        return None
    add, remove = raw.get("add"), raw.get("remove") or []
    if add is not None and not isinstance(add, str):
        result.diagnostics.append(overlay.diagnostic((*at, "add"), "'add' is a CSV file path"))
        return None
    if not isinstance(remove, list) or not all(isinstance(k, str | int) for k in remove):
        result.diagnostics.append(overlay.diagnostic((*at, "remove"), "'remove' is a list of keys"))
        return None
    path = (overlay.path.parent / add).resolve() if add else None
    return CsvPatch(path, tuple(str(k) for k in remove), overlay)


# --- the domain's own CSV: the shared one with the overlay's rows --------------------------------

_SCRATCH: list[Path] = []


def _scratch() -> Path:
    if not _SCRATCH:
        folder = Path(tempfile.mkdtemp(prefix="reconciler-overlay-"))
        atexit.register(shutil.rmtree, folder, True)
        _SCRATCH.append(folder)
    return _SCRATCH[0]


def _data_rows(
    path: Path, source: CsvSource
) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header, [(line, row)]) of a checked CSV file."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header, rows = csv_rows(handle, source)
        return header, list(rows)


def patched_csv(lookup: LoadedLookup, base: Path) -> tuple[Path | None, list[Diagnostic]]:
    """The lookup's own CSV (the shared one with its overlay's rows), written to a scratch file;
    or the problems: a patch file whose header differs, a removed key the CSV does not have."""
    from reconciler.sources.csv import key_columns

    patch = lookup.csv_patch
    source = lookup.model.spec.block(CsvSource)
    if not (patch is not None and source is not None):
        raise RuntimeError("invariant broken: patch is not None and source is not None")
    overlay = patch.overlay
    positions = key_columns(source) or list(range(len(source.columns)))
    names = [c.name for c in source.columns]

    def key(row: list[str]) -> str:
        return ",".join(row[i] for i in positions if i < len(row))

    problems: list[Diagnostic] = []
    _, base_rows = _data_rows(base, source)
    rows = {key(row): row for _, row in base_rows}
    for i, removed in enumerate(patch.remove):
        if removed not in rows:
            problems.append(
                overlay.diagnostic(
                    ("spec", "csv", "patch", "remove", i),
                    f"key {removed!r} is not in {base.name}",
                    hint="remove lists keys of the shared CSV (for col-hash keys: the key "
                    "columns joined by commas)",
                )
            )
        rows.pop(removed, None)
    if patch.add is not None:
        if not patch.add.is_file():
            problems.append(
                overlay.diagnostic(
                    ("spec", "csv", "patch", "add"),
                    f"CSV file not found: {patch.add}",
                    hint="add is relative to the overlay's file",
                )
            )
        else:
            header, added = _data_rows(patch.add, source)
            if source.hasHeader and [h.strip() for h in header or []] != names:
                problems.append(
                    Diagnostic(
                        str(patch.add),
                        1,
                        None,
                        "",
                        f"header {abridged(header or [])} does not match the lookup's columns "
                        f"{abridged(names)}",
                        hint=f"the patch rows of {overlay.path}:{overlay.line} need the same header",
                    )
                )
            for line, row in added:
                if len(row) != len(names):
                    problems.append(
                        Diagnostic(
                            str(patch.add),
                            line,
                            None,
                            "",
                            f"{len(row)} fields, expected {len(names)}",
                        )
                    )
                    continue
                rows[key(row)] = row
    if problems:
        return None, problems
    target = _scratch() / lookup.model.metadata.domain / f"{lookup.model.metadata.name}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if source.hasHeader:
            writer.writerow(names)
        writer.writerows(rows.values())
    return target, []


__all__ = ["CsvPatch", "expand_fan_out", "merge", "patched_csv"]
