"""The documentation stays true to the code: every setting and command is documented."""

from __future__ import annotations

from pathlib import Path

from click import Group

from pipelines.audio.settings import AudioSettings
from pipelines.cli.main import main
from pipelines.fraud.settings import TransactionSettings
from pipelines.settings import SecuritySettings, Settings
from pipelines.video.settings import VideoSettings

ROOT = Path(__file__).resolve().parents[3]


def all_variables() -> set[str]:
    names = set(Settings().to_env()) | {"STREAMWISE_BROKER"}
    names |= {f"STREAMWISE_SECURITY__{f.upper()}" for f in SecuritySettings.model_fields}
    names |= {f"STREAMWISE_VIDEO__{f.upper()}" for f in VideoSettings.model_fields}
    names |= {f"STREAMWISE_AUDIO__{f.upper()}" for f in AudioSettings.model_fields}
    names |= {f"STREAMWISE_TRANSACTIONS__{f.upper()}" for f in TransactionSettings.model_fields}
    return names


def test_every_setting_is_in_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = sorted(n for n in all_variables() if f"`{n}`" not in guide)
    assert missing == []


def test_every_documented_setting_exists() -> None:
    import re

    guide = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(STREAMWISE_[A-Z0-9_]+)`", guide, flags=re.M))
    assert documented == all_variables()


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, command in main.commands.items():
        subcommands = command.commands if isinstance(command, Group) else {}
        if subcommands:
            for sub in subcommands:
                assert f"streamwise {name} " in readme, name
                assert sub in readme, (name, sub)
        else:
            assert f"streamwise {name}" in readme, name


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:800]
    assert "make demo" in head
    assert "make test" in head
