"""The README stays true: every setting documented, CI running the documented test command."""

from __future__ import annotations

import re
from pathlib import Path

from service.settings import Settings

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _env_names() -> list[str]:
    names = []
    for group, info in Settings.model_fields.items():
        model = info.annotation
        assert model is not None
        names += [f"PARCOURS_{group}_{field}".upper() for field in model.model_fields]
    return names


def test_readme_documents_every_setting() -> None:
    table = {
        line.split("|")[1].strip(" `")
        for line in README.splitlines()
        if line.startswith("| `PARCOURS_")
    }

    assert set(_env_names()) - table == set(), "document these settings in the README"
    assert table - set(_env_names()) == set(), "the README documents settings that do not exist"


def test_readme_first_screen_has_exactly_two_setup_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]

    assert len(commands) == 2
    assert "parcours dev --replay sample" in commands[0]
    assert commands[1].endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    test_command = next(line for line in first_block.splitlines() if line.endswith("pytest"))
    ci = (ROOT / ".ci" / "run").read_text()

    assert test_command in ci.splitlines()


def test_readme_lists_every_canonical_event_type() -> None:
    from models.events import CANONICAL_TYPES

    listed = set(
        re.findall(r"`([a-z_]+)`", README.split("Canonical types:", 1)[1].split("\n\n")[0])
    )
    assert set(CANONICAL_TYPES) <= listed
