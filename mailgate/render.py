"""jinja2 templates: loaded from files only, sandboxed, StrictUndefined.

Mail content is only ever passed in as data, never compiled, so `{{ 7*7 }}` in a subject
renders literally. A department can override any template by putting a file of the same
name in templates/<department key>/.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateNotFound, select_autoescape
from jinja2.sandbox import SandboxedEnvironment


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    html: str | None


class Renderer:
    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(templates_dir)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2", "html"),
                                         default_for_string=False, default=False),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["duration"] = humanize_duration

    def render(self, name: str, department: str | None, context: dict) -> Rendered:
        """Render NAME.txt.j2 (required) and NAME.html.j2 (optional), department first."""
        text = self._template(f"{name}.txt.j2", department).render(context)
        try:
            html = self._template(f"{name}.html.j2", department).render(context)
        except TemplateNotFound:
            html = None
        return Rendered(text=text, html=html)

    def _template(self, filename: str, department: str | None) -> Template:
        names = [f"{department}/{filename}", filename] if department else [filename]
        return self.env.select_template(names)

    def check(self) -> list[str]:
        """Compile every template; one line per broken one."""
        problems = []
        if not self.templates_dir.is_dir():
            return [f"{self.templates_dir}: templates directory not found"]
        for path in sorted(self.templates_dir.rglob("*.j2")):
            name = path.relative_to(self.templates_dir).as_posix()
            try:
                self.env.get_template(name)
            except Exception as exc:
                problems.append(f"{path}: {type(exc).__name__}: {exc}")
        if not (self.templates_dir / "ack.txt.j2").is_file():
            problems.append(f"{self.templates_dir}: ack.txt.j2 is missing")
        return problems


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
