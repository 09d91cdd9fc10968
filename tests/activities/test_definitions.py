"""The agents directory is parsed once per file version, not once per run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.definitions
from activities.definitions import AgentsDirectory, DefinitionActivities, load_agents
from fsm.loader import Loaded, load_file
from fsm.problems import DefinitionError
from schemas.activity import ResolveDefinitionInput, RunLimits
from tests.conftest import EXAMPLES

FORM = (EXAMPLES / "form.yaml").read_text()


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    for name in ("form.yaml", "support.yaml"):
        (tmp_path / name).write_text((EXAMPLES / name).read_text())
    return tmp_path


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files parsed so far, in order (the real loader still runs)."""
    calls: list[str] = []

    def counting(path: Path, **options: Any) -> Loaded:
        calls.append(path.name)
        return load_file(path, **options)

    monkeypatch.setattr(activities.definitions, "load_file", counting)
    return calls


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` and move the mtime on, as a later edit would.

    Two writes within one kernel clock tick can share an mtime; a test edits
    faster than a person, so it states the time that passed.
    """
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


async def resolve(definitions: DefinitionActivities, agent: str) -> None:
    await ActivityEnvironment().run(
        definitions.resolve_definition, ResolveDefinitionInput(agent=agent)
    )


async def test_resolving_again_parses_no_unchanged_file(
    agents_dir: Path, parsed: list[str]
) -> None:
    definitions = DefinitionActivities(agents_dir, RunLimits())
    await resolve(definitions, "contact_form")
    assert sorted(parsed) == ["form.yaml", "support.yaml"]
    await resolve(definitions, "contact_form")
    await resolve(definitions, "support")
    assert sorted(parsed) == ["form.yaml", "support.yaml"]


def test_an_edited_added_or_removed_file_is_seen_on_the_next_load(
    agents_dir: Path, parsed: list[str]
) -> None:
    directory = AgentsDirectory(agents_dir)
    assert directory.load()["contact_form"].definition.max_steps == 30
    parsed.clear()
    # Same size, new mtime: only the edited file is read again.
    rewrite(agents_dir / "form.yaml", FORM.replace("max_steps: 30", "max_steps: 31"))
    assert directory.load()["contact_form"].definition.max_steps == 31
    assert parsed == ["form.yaml"]
    (agents_dir / "other.yaml").write_text(FORM.replace("name: contact_form", "name: other"))
    assert "other" in directory.load()
    (agents_dir / "other.yaml").unlink()
    assert "other" not in directory.load()
    assert parsed == ["form.yaml", "other.yaml"]


def test_a_file_replaced_by_rename_is_read_again_even_with_the_same_mtime_and_size(
    agents_dir: Path,
) -> None:
    directory = AgentsDirectory(agents_dir)
    form = agents_dir / "form.yaml"
    assert directory.load()["contact_form"].definition.max_steps == 30
    stat = form.stat()
    replacement = agents_dir / "form.yaml.new"  # not a definition suffix: never listed
    replacement.write_text(FORM.replace("max_steps: 30", "max_steps: 31"))
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement.replace(form)
    assert directory.load()["contact_form"].definition.max_steps == 31


async def test_a_file_made_invalid_refuses_the_run_naming_it(
    agents_dir: Path, parsed: list[str]
) -> None:
    definitions = DefinitionActivities(agents_dir, RunLimits())
    await resolve(definitions, "contact_form")
    rewrite(agents_dir / "form.yaml", FORM.replace("target: confirm", "target: confrim", 1))
    for _ in range(2):  # an invalid file is not cached: refused again, the same way
        with pytest.raises(ApplicationError) as refused:
            await resolve(definitions, "support")
        assert refused.value.type == "DefinitionRefused" and refused.value.non_retryable
        assert "form.yaml: state 'ask_phone': transition 1: target 'confrim' is not a state" in (
            str(refused.value)
        )
    with pytest.raises(DefinitionError) as uncached:
        load_agents(agents_dir)
    assert refused.value.message == str(uncached.value)
    assert parsed.count("form.yaml") == 4
    rewrite(agents_dir / "form.yaml", FORM)
    await resolve(definitions, "contact_form")
