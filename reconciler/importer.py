"""Import: write spec files for lookups that already exist, so a plan right after is empty.

For each live lookup the importer tries the most specific source block its deploy config allows
(``staticQuery``, ``periodicQuery``, ``slidingWindowQuery``, ``csv``), then *proves* it: the candidate
spec is expanded exactly as ``plan`` would expand it and compared with the live config; if anything
differs, it falls back to a full ``recipe``. Masked secrets become ``${env:...}`` placeholders. When
the service answers ``deployConfig: null`` it writes the best spec ``fields`` allow and marks every
unknown with a comment; it never pretends to know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from reconciler.canonical import flatten
from reconciler.client import LookupMeta
from reconciler.coltypes import FIELD_TYPE_NAMES
from reconciler.desired import DesiredLookup, expand, observable_fields
from reconciler.plan.builder import compare
from reconciler.sources import ENDPOINTS, KINDS
from reconciler.spec.model import LookupSpec

_TYPE_BY_FIELD = {short: long for long, short in FIELD_TYPE_NAMES.items()}


@dataclass
class ImportedLookup:
    """One generated spec: its YAML text, its source kind, and what the user must know."""

    name: str
    kind: str
    text: str
    notes: list[str] = field(default_factory=list)
    exact: bool = True  # False when deployConfig was unreadable


def _candidates(domain: str, name: str, config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Spec blocks to try, in the table's order (most specific first; ``recipe`` last)."""
    live = config.get("recipe") or {}
    out = []
    for kind in KINDS.values():
        block = kind.candidate(domain, name, live)
        if block is not None:
            out.append((kind.name, block))
    return out


def _document(
    domain: str, name: str, visibility: str, kind: str, body: dict[str, Any], notify: bool | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if visibility != "creator-only":
        spec["visibility"] = visibility
    spec[kind] = body
    if kind == "recipe" and notify:
        spec["notifyStatus"] = True
    return {
        "apiVersion": "reconciler/v1",
        "kind": "Lookup",
        "metadata": {"domain": domain, "name": name},
        "spec": spec,
    }


def _round_trips(document: dict[str, Any], meta: LookupMeta) -> bool:
    """True when planning this spec against ``meta`` would be a no-op (no diff, nothing unverified)."""
    try:
        spec = LookupSpec.model_validate(document["spec"])
    except Exception:  # a candidate the spec language cannot hold
        return False
    _, config, ignore = expand(spec)
    desired = DesiredLookup(
        address=f"{meta.domain}/{meta.name}",
        domain=str(meta.domain),
        name=meta.name,
        state="present",
        protect=False,
        kind=spec.source_kind,
        endpoint=ENDPOINTS[spec.source_kind or "recipe"],
        body={},
        canonical=flatten(config),
        ignore=frozenset(ignore),
        fields=observable_fields(config),
    )
    comparison = compare(desired, meta, None)
    return not comparison.diff and not [p for p in comparison.unverified if p != "notifyStatus"]


def _dump(document: dict[str, Any], header: list[str]) -> str:
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return "".join(f"# {line}\n" for line in header) + text


def import_lookup(domain: str, meta: LookupMeta) -> ImportedLookup:
    """The spec of one live lookup."""
    visibility = meta.visibility or "creator-only"
    header = [f"Imported by reconciler from {domain}/{meta.name} on {datetime.now(UTC):%Y-%m-%d}."]
    if meta.deployConfig:
        config = meta.deployConfig
        for kind, body in _candidates(domain, meta.name, config):
            document = _document(
                domain, meta.name, visibility, kind, body, config.get("notifyStatus")
            )
            if _round_trips(document, meta) or kind == "recipe":
                notes = []
                if not _round_trips(document, meta):
                    notes.append(
                        "the live config has fields the spec language cannot express exactly; review the recipe"
                    )
                placeholders = sorted(
                    set(re.findall(r"\$\{env:([A-Z0-9_]+)\}", yaml.safe_dump(body)))
                )
                if placeholders:
                    notes.append(
                        "secrets were masked by the service: export "
                        + ", ".join(placeholders)
                        + " before apply"
                    )
                    header.append(
                        "Secrets were masked by the service: set "
                        + ", ".join(placeholders)
                        + " where apply runs."
                    )
                if "file" in body:
                    notes.append(
                        f"the CSV was uploaded and the service cannot give it back: put it at "
                        f"data/{meta.name}.csv beside the spec"
                    )
                    header.append(
                        f"The CSV was uploaded: put it at data/{meta.name}.csv beside this file."
                    )
                return ImportedLookup(meta.name, kind, _dump(document, header), notes)
    return _from_fields(domain, meta, visibility, header)


def _from_fields(
    domain: str, meta: LookupMeta, visibility: str, header: list[str]
) -> ImportedLookup:
    """The honest best effort when the service does not show the deploy config."""
    header.append(
        "The service did not report this lookup's deployConfig: only its columns, key and"
    )
    header.append("visibility are known. Every line marked UNKNOWN must be checked before apply.")
    columns = [
        {"name": f.column, "type": _TYPE_BY_FIELD.get(f.type.lower(), "STRING")}
        for f in meta.fields
    ] or [{"name": "UNKNOWN", "type": "STRING"}]
    keys = [f.column for f in meta.fields if f.key]
    csv: dict[str, Any] = {"file": f"data/{meta.name}.csv", "columns": columns}
    if len(keys) == 1 and meta.fields and keys[0] != meta.fields[0].column:
        csv["key"] = {"type": "column", "column": keys[0]}
    elif len(keys) > 1:
        csv["key"] = {"type": "col-hash", "columns": keys}
    document = _document(domain, meta.name, visibility, "csv", csv, None)
    text = _dump(document, header)
    text = text.replace(
        f"    file: data/{meta.name}.csv\n",
        f"    file: data/{meta.name}.csv  # UNKNOWN: the source (CSV, S3 or query) was not reported\n",
    )
    notes = [
        "deployConfig was not readable: wrote columns and key from metadata; the source is UNKNOWN",
        f"provide data/{meta.name}.csv or replace the csv block with the real source",
    ]
    return ImportedLookup(meta.name, "csv", text, notes, exact=False)


def domain_document(domain: str) -> str:
    """The Domain document written beside imported lookups."""
    document = {
        "apiVersion": "reconciler/v1",
        "kind": "Domain",
        "metadata": {"name": domain},
        "spec": {"prune": False, "keep": []},
    }
    return _dump(
        document, [f"Domain {domain}: set prune: true to delete live lookups no spec names."]
    )


def invalid_import(domain: str, item: ImportedLookup) -> str:
    """Why the spec written for ``item`` would not validate ("" when it would).

    Import writes only specs that ``validate`` accepts: each is checked as its own file, without
    its CSV (which the user supplies for uploaded lookups).
    """
    import tempfile

    from reconciler.spec import validate_paths

    with tempfile.TemporaryDirectory(prefix="reconciler-import-") as folder:
        path = Path(folder) / "lookup.yaml"
        path.write_text(item.text)
        result = validate_paths([str(path)], csv=False, allow_outside=True)
    return "; ".join(f"{d.field or 'spec'}: {d.message}" for d in result.errors)


DOMAIN_FILE = "_domain"


def file_names(names: list[str]) -> list[str]:
    """A file name (without ``.yaml``) per lookup name: the name itself, unless another file
    already has it (``_domain``, the Domain document's; or the same name in other case, on a
    file system that ignores case), then ``NAME-2``, ``NAME-3``... A lookup never overwrites
    another one's file or the Domain document."""
    taken = {DOMAIN_FILE}
    chosen = []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate.lower())
        chosen.append(candidate)
    return chosen


def write_import(
    out_dir: Path,
    domain: str,
    imported: list[ImportedLookup],
    *,
    force: bool,
    domain_file: bool = True,
) -> list[Path]:
    """Write one file per lookup (plus ``_domain.yaml`` with ``domain_file``); refuse to
    overwrite without ``force``."""
    from reconciler.errors import SettingsError

    folder = out_dir / domain
    names = file_names([item.name for item in imported])
    targets = [
        (folder / f"{name}.yaml", item.text) for name, item in zip(names, imported, strict=True)
    ]
    if domain_file:
        targets.append((folder / f"{DOMAIN_FILE}.yaml", domain_document(domain)))
    existing = [str(path) for path, _ in targets if path.exists()]
    if existing and not force:
        raise SettingsError(
            f"would overwrite {len(existing)} file(s): {', '.join(existing[:5])}"
            + (" ..." if len(existing) > 5 else ""),
            hint="pass --force to overwrite, or --out another folder",
        )
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in targets:
        path.write_text(text)
    return [path for path, _ in targets]
