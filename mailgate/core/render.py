"""jinja2 templates: loaded from files only, sandboxed, StrictUndefined.

Mail content is only ever passed in as data, never compiled, so `{{ 7*7 }}` in a subject
renders literally. A department can override any template by putting a file of the same
name in templates/<department key>/.

A Renderer reads every template into memory when it is made: an edit on disk takes effect
when the daemon reloads (SIGHUP) after checking it, never halfway through a message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    Template,
    TemplateNotFound,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment

from mailgate.config.settings import default_templates_dir

# Every mail mailgate writes; a department may override any of them (templates/<key>/).
REQUIRED = ("ack", "escalation", "notify_team", "reply_requester", "relay_team",
            "command_reply", "resolved", "thanks")
# Mail added after the first release: a templates folder without them (an admin's copy
# from an older version) uses the ones shipped with mailgate instead of failing `check`.
OPTIONAL = ("not_kept", "unproven", "flood_summary")


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    html: str | None


class Renderer:
    def __init__(self, templates_dir: Path, shipped: Path | None = None) -> None:
        self.templates_dir = templates_dir
        self.loader = SnapshotLoader(templates_dir)
        self.loader.add_missing(shipped or default_templates_dir(),
                                [f"{name}.txt.j2" for name in OPTIONAL])
        self.env = SandboxedEnvironment(
            loader=self.loader,
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2", "html"),
                                         default_for_string=False, default=False),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # a snapshot: nothing to check for staleness on each use
        )
        self._templates: dict[tuple[str, str | None], Template] = {}
        self.env.filters["duration"] = humanize_duration

    def render(self, name: str, department: str | None, context: dict) -> Rendered:
        """Render NAME.txt.j2 (required) and NAME.html.j2 (optional), department first."""
        text = self._template(f"{name}.txt.j2", department).render(context)
        html_name = f"{name}.html.j2"
        if not self._exists(html_name, department):  # cheaper than TemplateNotFound
            return Rendered(text=text, html=None)
        html = self._template(html_name, department).render(context)
        return Rendered(text=text, html=html)

    def _exists(self, filename: str, department: str | None) -> bool:
        sources = self.loader.sources
        return filename in sources or f"{department}/{filename}" in sources

    def _template(self, filename: str, department: str | None) -> Template:
        # Memoised: select_template would raise and catch TemplateNotFound on every call
        # for a department without its own copy. Sources never change within a Renderer.
        key = (filename, department)
        found = self._templates.get(key)
        if found is None:
            names = [f"{department}/{filename}", filename] if department else [filename]
            found = self._templates[key] = self.env.select_template(names)
        return found

    def check(self) -> list[str]:
        """Compile every template; one line per broken one."""
        problems = []
        if not self.templates_dir.is_dir():
            return [f"{self.templates_dir}: templates directory not found"]
        names = self.env.list_templates()
        for name in names:
            try:
                self.env.get_template(name)
            except Exception as exc:
                line = getattr(exc, "lineno", None)  # TemplateSyntaxError knows its line
                where = f"{self.templates_dir / name}" + (f", line {line}" if line else "")
                problems.append(f"{where}: {type(exc).__name__}: {exc}")
        missing = [f"{name}.txt.j2" for name in (*REQUIRED, *OPTIONAL)
                   if f"{name}.txt.j2" not in names]
        if missing:
            problems.append(f"{self.templates_dir}: missing {', '.join(missing)} (copy them "
                            "from mailgate's templates/ folder)")
        return problems


class SnapshotLoader(BaseLoader):
    """Every *.j2 file under a folder, read once; unreadable files fail when used."""

    def __init__(self, folder: Path) -> None:
        self.sources: dict[str, tuple[str, str] | Exception] = {}
        files = sorted(folder.rglob("*.j2")) if folder.is_dir() else []
        for path in (f for f in files if f.is_file()):
            self.sources[path.relative_to(folder).as_posix()] = _read(path)

    def add_missing(self, folder: Path, names: list[str]) -> None:
        """Take these templates from `folder` where the snapshot has none of its own."""
        for name in names:
            path = folder / name
            if name not in self.sources and path.is_file():
                self.sources[name] = _read(path)

    def get_source(self, environment: Environment,
                   template: str) -> tuple[str, str | None, Callable[[], bool]]:
        found = self.sources.get(template)
        if found is None:
            raise TemplateNotFound(template)
        if isinstance(found, Exception):
            raise found
        source, filename = found
        return source, filename, lambda: True  # never stale: only a new Renderer rereads

    def list_templates(self) -> list[str]:
        return sorted(self.sources)


def _read(path: Path) -> tuple[str, str] | Exception:
    """A template's text and file name, or why it cannot be read (reported by check(),
    not a crash)."""
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        return exc


def humanize_duration(value: timedelta, business: bool = False) -> str:
    """timedelta(hours=4) -> "4 hours" (or "4 business hours")."""
    seconds = int(value.total_seconds())
    qualifier = "business " if business else ""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {qualifier}{unit}{'s' if count != 1 else ''}"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} {qualifier}hours"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} {qualifier}minute{'s' if minutes != 1 else ''}"
