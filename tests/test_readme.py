"""README is the user's manual: its settings table and its commands must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from tests.support import ALL_SETTINGS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _env_names() -> set[str]:
    """The variable each setting is read from (its first alias, else LLM_TWIN_<FIELD>)."""
    names = set()
    for settings in ALL_SETTINGS:
        prefix = str(settings.model_config.get("env_prefix", ""))
        for field_name, field in settings.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                alias = str(alias.choices[0])
            names.add(str(alias) if alias else f"{prefix}{field_name}".upper())
    return names


def test_the_settings_table_lists_every_setting_and_no_other() -> None:
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))
    assert documented == _env_names()


def test_the_two_commands_and_ci_agree() -> None:
    root = Path(__file__).resolve().parents[1]
    assert "scripts/demo" in README
    assert "scripts/test" in README
    assert "scripts/test" in (root / ".ci" / "run").read_text()
