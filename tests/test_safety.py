"""What reconciler will never do (issue 24): each ordinary mistake or hostile input that used to
become a delete, a silent no-op or a leak, shown failing closed.

Every test here starts from a lookup the emulator already holds and a Domain with ``prune: true``,
so a mistake that loses a spec would plan a delete; the test shows that it is an error instead and
that nothing was sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.spec.loader import load_specs
from tests.planning import KINDS, Project, lookup_doc
from tests.support import git

pytestmark = pytest.mark.anyio

DOMAIN = "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: acme}\nspec: {prune: true}\n"


async def applied(tmp_path: Path, *names: str) -> Project:
    """A project whose lookups ``names`` (one file each) and a pruning Domain are applied."""
    project = Project(tmp_path)
    (project.specs / "domain.yaml").write_text(DOMAIN)
    for name in names:
        project.write(lookup_doc(name, KINDS["static"]), file=f"{name}.yaml")
    assert await project.apply() == 0
    return project


async def refused(project: Project, *needles: str, **options: object) -> str:
    """The plan fails with a SpecError whose diagnostics hold every needle (so no plan, no
    delete); returns their rendered text."""
    with pytest.raises(SpecError) as caught:
        await project.plan(**options)
    text = "\n".join(d.render() for d in caught.value.diagnostics)
    for needle in needles:
        assert needle in text, text
    return text


async def test_an_upper_case_yaml_suffix_is_an_error_not_a_skipped_file(tmp_path: Path) -> None:
    project = await applied(tmp_path, "geo", "asn")
    (project.specs / "asn.yaml").rename(project.specs / "asn.YAML")
    (project.specs / "geo.yaml").rename(project.specs / "geo.Yml")
    text = await refused(
        project, "asn.YAML", "geo.Yml", "'.YAML' is not read", "rename it to asn.yaml"
    )
    assert "'.Yml' is not read" in text


async def test_an_empty_or_comment_only_spec_file_is_an_error(tmp_path: Path) -> None:
    project = await applied(tmp_path, "geo", "asn")
    (project.specs / "geo.yaml").write_text("")
    (project.specs / "asn.yaml").write_text("# truncated\n---\n# nothing\n")
    await refused(project, "geo.yaml", "asn.yaml", "holds no document")


async def test_a_tracked_spec_file_missing_from_a_sparse_checkout_is_an_error(
    tmp_path: Path,
) -> None:
    project = await applied(tmp_path, "geo", "asn")
    (project.specs / "team").mkdir()
    (project.specs / "asn.yaml").rename(project.specs / "team" / "asn.yaml")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "specs")
    git(tmp_path, "sparse-checkout", "set", "--no-cone", "/*", "!/specs/team/")
    assert not (project.specs / "team" / "asn.yaml").exists()  # hidden by the sparse checkout
    await refused(project, "team/asn.yaml", "not in the work tree", "sparse-checkout")
    # A file removed by hand (not `git rm`) is the same: git still says it belongs there.
    git(tmp_path, "sparse-checkout", "disable")
    (project.specs / "geo.yaml").unlink()
    await refused(project, "geo.yaml", "'git rm' it")
    # Staged for deletion: the intent is recorded, and the plan deletes it as asked.
    git(tmp_path, "rm", "-q", "--cached", "specs/geo.yaml")
    plan = (await project.plan()).plan
    assert [(c.address, c.action.value) for c in plan.actionable] == [("acme/geo", "delete")]


def named(name: str, body: str = KINDS["static"]) -> str:
    """A Lookup document of acme whose name is written as ``name`` (block style, so that a
    ``${env:...}`` reference in it stays plain text)."""
    return lookup_doc("X", body).replace(
        "{domain: acme, name: X}", f"\n  domain: acme\n  name: {name}"
    )


@pytest.mark.parametrize("where", ["name", "keep"])
async def test_an_env_var_set_to_empty_is_an_error(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = await applied(tmp_path, "geo_prod", "manual_x")
    monkeypatch.setenv("SUFFIX", "")
    monkeypatch.setenv("KEEP", "")
    if where == "name":
        project.write(named("geo${env:SUFFIX}"), file="geo_prod.yaml")
    else:
        (project.specs / "manual_x.yaml").unlink()
        (project.specs / "domain.yaml").write_text(
            DOMAIN.replace("{prune: true}", "{prune: true, keep: ['${env:KEEP}']}")
        )
    await refused(project, "is set but empty", "${env:")


def test_env_defaults_are_explicit(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        named("geo${env:SUFFIX:-_dev}")
        + "---\n"
        + named("asn${env:EMPTY:-}")
        + "---\n"
        + named("ip${env:SET:-_x}")
    )
    result = load_specs([tmp_path], env={"SUFFIX": "", "SET": "_prod"})
    assert not result.errors, result.errors
    assert sorted(lookup.address for lookup in result.lookups) == [
        "acme/asn",
        "acme/geo_dev",
        "acme/ip_prod",
    ]
