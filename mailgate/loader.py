"""Load config + directory + templates together and cross-check them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailgate.config import Config, load_config
from mailgate.directory import Directory, load_directory
from mailgate.errors import ConfigError
from mailgate.render import Renderer


@dataclass(frozen=True)
class Setup:
    config: Config
    directory: Directory


def load_setup(path: Path) -> Setup:
    """Everything the daemon needs, or ConfigError with one line per problem."""
    config = load_config(path)
    directory = load_directory(config.directory_path)
    problems = [
        f"{config.path}: mailbox[{i}].department: unknown department {box.department!r} "
        f"(known: {', '.join(directory.departments)})"
        for i, box in enumerate(config.mailboxes) if box.department not in directory.departments
    ]
    problems += Renderer(config.templates_dir).check()
    if problems:
        raise ConfigError(problems)
    return Setup(config, directory)


def check(path: Path) -> list[str]:
    """Problems found, as lines; empty when all is well."""
    try:
        load_setup(path)
    except ConfigError as exc:
        return exc.problems
    return []
