"""The action's summary of an apply: read ``apply --format json`` events (one per line), write a
markdown table of what happened to REPORT, and print ``true`` when anything changed."""

from __future__ import annotations

import json
import sys


def main(events: str, report: str) -> None:
    rows, summary = [], {}
    with open(events, encoding="utf-8") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "change_finished":
                address = str(event.get("address", "")).replace("`", "'").replace("|", "/")
                rows.append(f"| `{address}` | {event.get('action')} | {event.get('status')} |")
            elif event.get("event") == "summary":
                summary = event
    with open(report, "w", encoding="utf-8") as handle:
        handle.write("### reconciler apply\n\n| lookup | action | status |\n|---|---|---|\n")
        handle.write("\n".join(rows) + "\n" if rows else "| (no changes) | | |\n")
    changed = any(summary.get(key) for key in ("added", "changed", "destroyed", "submitted"))
    print("true" if changed else "false")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
