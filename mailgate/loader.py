"""Load config + directory + templates together and cross-check them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailgate.config import Config, SecretsMode, load_config, read_toml
from mailgate.directory import Directory, load_directory
from mailgate.errors import ConfigError
from mailgate.render import Renderer


@dataclass(frozen=True)
class Setup:
    config: Config
    directory: Directory
    renderer: Renderer  # the template snapshot that was checked: the one to use


def load_setup(path: Path, secrets: SecretsMode = "read") -> Setup:
    """Everything the daemon needs, or ConfigError with one line per problem.

    A broken mailgate.toml does not hide the directory's problems: `mailgate check` shows
    both files' at once whenever the directory can still be found.
    """
    try:
        config = load_config(path, secrets)
    except ConfigError as exc:
        raise ConfigError(exc.problems + _directory_problems(path)) from None
    directory = load_directory(config.directory_path)
    problems = [
        f"{config.path}: mailbox[{i}].department: unknown department {box.department!r} "
        f"(known: {', '.join(directory.departments)})"
        for i, box in enumerate(config.mailboxes) if box.department not in directory.departments
    ]
    renderer = Renderer(config.templates_dir)
    problems += renderer.check()
    if problems:
        raise ConfigError(problems)
    return Setup(config, directory, renderer)


def directory_path(path: Path) -> Path:
    """Where mailgate.toml says directory.toml is, reading nothing else: `mailgate route`
    and `mailgate directory import` need no passwords, mailboxes or templates."""
    table = read_toml(path).get("directory")
    value = table.get("path") if isinstance(table, dict) else None
    name = Path(value if isinstance(value, str) and value else "directory.toml")
    return name if name.is_absolute() else (path.parent / name).resolve()


def load_directory_of(path: Path) -> Directory:
    """The directory a mailgate.toml names, validated on its own."""
    return load_directory(directory_path(path))


def _directory_problems(path: Path) -> list[str]:
    try:
        load_directory(directory_path(path))
    except ConfigError as exc:
        # An unreadable mailgate.toml is reported once, by load_config, not again here.
        return [line for line in exc.problems if not line.startswith(f"{path}: ")]
    return []
