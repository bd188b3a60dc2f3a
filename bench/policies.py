"""Benchmark of policies (issue 30), one run, printed: the whole plan of N in-sync lookups (10
domains, each lookup with labels) against the emulator served on loopback in its own process (as
``bench/run.py`` reads it), without Policies and with R rules (spread over policies matching every
lookup), medians of the repeats alternating, same run; and the time the rules alone take
(``plan.policies.evaluate`` on the finished plan).

    python bench/policies.py [--lookups 10000] [--rules 50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Rules of the shapes the README suggests, each over a different field, so none is a copy.
RULE_SHAPES = (
    "change.action == 'delete' || after.visibility == 'creator-only'",
    "'owner' in lookup.labels",
    "csv == null || csv.bytes <= 50 * 1024 * 1024",
    "lookup.labels.tier != 'x{i}'",
    "!lookup.name.startsWith('forbidden_{i}')",
    "change.action != 'delete' || lookup.protect",
    "domain.wave >= 0",
    "has(lookup.labels.owner) && lookup.labels.owner != 'nobody{i}'",
    "after == null || after.recipe.key.type != 'bogus{i}'",
    "size(lookup.name) < 200 + {i}",
)


def policies_yaml(rules: int) -> str:
    docs = []
    per = 5
    for p in range(0, rules, per):
        lines = [
            "apiVersion: reconciler/v1",
            "kind: Policy",
            f"metadata: {{name: p{p // per}}}",
            "spec:",
            "  rules:",
        ]
        for i in range(p, min(rules, p + per)):
            expr = RULE_SHAPES[i % len(RULE_SHAPES)].replace("{i}", str(i))
            lines += [
                f'    - expr: "{expr}"',
                f"      message: rule {i}",
                "      enforcement: advisory",
            ]
        docs.append("\n".join(lines) + "\n")
    return "---\n".join(docs)


def seed(folder: Path, lookups: int) -> tuple[Path, Path]:
    from reconciler.emulator.derive import derive
    from reconciler.emulator.store import Store

    specs = folder / "specs"
    specs.mkdir(parents=True)
    db = folder / "emu.db"
    store = Store(db)
    schedule = [(0.0, "create.start", "s"), (0.0, "deploy.ok", "ok")]
    domains = [f"d{d}" for d in range(10)]
    for domain in domains:
        docs = []
        for i in range(lookups // len(domains)):
            name = f"l{i:05d}"
            config = derive("deploy-static-query", domain, name, {"query": "from t select x"})
            store.create(domain, name, config, {}, schedule, "bench")
            docs.append(
                f"apiVersion: reconciler/v1\nkind: Lookup\nmetadata: {{domain: {domain}, "
                f"name: {name}, labels: {{owner: soc, tier: gold}}}}\n"
                "spec:\n  staticQuery: {query: from t select x}\n"
            )
        (specs / f"{domain}.yaml").write_text("---\n".join(docs))
    store.close()
    return specs, db


def plan_seconds(specs: Path, base: str, state: Path) -> tuple[float, Any]:
    from reconciler.client import LookupReader
    from reconciler.engine import make_plan
    from reconciler.settings import Settings

    settings = Settings(base, state_path=state)

    async def run() -> Any:
        async with LookupReader(settings) as reader:
            return await make_plan(reader, [str(specs)], settings.state_path)

    start = time.perf_counter()
    result = asyncio.run(run())
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from bench.run import server
    from reconciler.heap import collector_paused
    from reconciler.plan.policies import evaluate

    with (
        tempfile.TemporaryDirectory(prefix="reconciler-bench-policies-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        folder = Path(tmp)
        specs, db = seed(folder, args.lookups)
        app, _ = stack.enter_context(server(db))
        without, with_rules, rules_alone = [], [], []
        for _ in range(args.repeats):
            (specs / "policies.yaml").unlink(missing_ok=True)
            seconds, run = plan_seconds(specs, app, folder / "state.json")
            assert not run.plan.can_apply() and not run.plan.violations
            without.append(seconds)
            (specs / "policies.yaml").write_text(policies_yaml(args.rules))
            seconds, run = plan_seconds(specs, app, folder / "state.json")
            assert not run.plan.can_apply() and not run.plan.violations, run.plan.violations[:3]
            assert sum(len(p.rules) for p in run.workspace.compiled_policies) == args.rules
            with_rules.append(seconds)
            start = time.perf_counter()
            with collector_paused():  # as inside the plan
                evaluate(
                    run.plan,
                    run.workspace.compiled_policies,
                    run.workspace.subjects(),
                    run.workspace.domain_facts,
                )
            rules_alone.append(time.perf_counter() - start)
    base, ruled, alone = (statistics.median(x) for x in (without, with_rules, rules_alone))
    print(f"plan of {args.lookups} in-sync lookups, median of {args.repeats}:")
    print(f"  without policies:       {base:.2f} s")
    print(f"  with {args.rules} rules:          {ruled:.2f} s  (+{(ruled / base - 1) * 100:.1f}%)")
    print(
        f"  the rules alone:        {alone:.2f} s  ({alone / base * 100:.1f}% of the plan; "
        f"{alone / (args.lookups * args.rules) * 1e6:.2f} µs per rule and lookup)"
    )


if __name__ == "__main__":
    main()
