"""README.md is the manual: what it names must exist, and what the code offers must be in it.

Each test compares one kind of name (settings, commands and options, metrics, log events,
module paths, anchors) between the README and the code, read from the source or the parser,
so the manual and the code cannot drift apart without a test saying which name.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from mailgate.cli.main import build_parser
from mailgate.service.metrics import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PACKAGE = ROOT / "mailgate"

# Table reader methods (config/readers.py) whose first argument is a key name.
READERS = {"str", "int", "float", "bool", "duration", "choice", "str_list"}
# Which table each settings.py function reads; the others read no key of their own.
SETTINGS_SECTIONS = {
    "_smtp": "[smtp]", "_listener": "[intake.smtp]", "_mailbox": "[[mailbox]]",
    "_alerts": "[alerts]", "_limits": "[limits]", "_security": "[security]",
    "_cluster": "[cluster]", "_conversation": "[conversation]", "_digest": "[digest]",
    "_metrics": "[metrics]", "_database": "[database]", "_outbox_dir": "[outbox]",
    "_templates_dir": "[templates]",
}
OAUTH = "[oauth.NAME]"
# Keys built from a prefix (settings._secret: PREFIX_file, _env, _credential) or read
# outside a typed reader, which the source scan below cannot see.
SECRETS = {"[smtp]": "password", "[[mailbox]]": "password", "[database]": "password",
           OAUTH: ("client_secret", "certificate_key", "service_account")}
DYNAMIC_KEYS = {
    ("[smtp]", "port"), ("[smtp]", "ca_file"), ("[smtp]", "oauth"), ("[[mailbox]]", "port"),
    ("[[mailbox]]", "ca_file"), ("[[mailbox]]", "oauth"), ("[tls]", "ca_file"),
    ("[state]", "dir"), ("[directory]", "path"), ("[mailgate]", "instance"),
    ("[intake]", "read_processes"), (OAUTH, "command"), (OAUTH, "token_url"),
    (OAUTH, "device_url"), (OAUTH, "authorize_url"), (OAUTH, "authority"),
} | {(section, f"{prefix}_{source}")
     for section, prefixes in SECRETS.items()
     for prefix in ((prefixes,) if isinstance(prefixes, str) else prefixes)
     for source in ("file", "env", "credential")}


def keys_read(path: Path, sections: dict[str, str] | None, default: str = "") -> set:
    """(section, key) for every typed read with a literal key in the module's functions."""
    found = set()
    for func in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(func, ast.FunctionDef):
            continue
        section = sections.get(func.name) if sections is not None else default
        if section is None:
            continue
        for node in ast.walk(func):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in READERS and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                found.add((section, node.args[0].value))
    return found


def documented_settings() -> set:
    """(section, key) from the first cell of every README table row that starts with a
    `[section] key`: '`[smtp] host`, `port`' gives [smtp] host and [smtp] port, and
    '`[oauth.NAME] client_secret_file` / `_env`' also client_secret_env."""
    found = set()
    for line in README.splitlines():
        if not line.startswith("| `["):
            continue
        section, prefix = "", ""
        for token in re.findall(r"`([^`]+)`", line.split(" | ")[0]):
            if match := re.fullmatch(r"(\[\[?[\w.A-Z]+\]\]?)(?: (\w+))?", token):
                section, key = match.group(1), match.group(2)
                prefix = (key or "").removesuffix("_file")
            elif re.fullmatch(r"[a-z]\w*", token):
                key, prefix = token, token.removesuffix("_file")
            elif token in ("_env", "_credential"):
                key = prefix + token
            else:
                continue
            if key:
                found.add((section, key))
    return found


def test_every_setting_the_loader_reads_is_in_the_configuration_table() -> None:
    code = keys_read(PACKAGE / "config" / "settings.py", SETTINGS_SECTIONS)
    code |= keys_read(PACKAGE / "connect" / "oauth" / "profile.py", None, OAUTH)
    code |= DYNAMIC_KEYS
    documented = documented_settings()
    assert sorted(code - documented) == [], "settings the README does not document"
    readme_only = {(s, k) for s, k in documented - code
                   if not s.startswith(("[calendar", "[sla", "[[department", "[[person"))}
    assert sorted(readme_only) == [], "settings the README names but no code reads"


def test_every_directory_key_is_in_the_directory_tables() -> None:
    code = keys_read(PACKAGE / "config" / "directory.py",
                     {"_department": "[[department]]", "_person": "[[person]]"})
    documented = documented_settings()
    assert sorted(code - documented) == []
    rule_keys = set(re.findall(r"^\| `(\w+)` \|", README.split("| rule key |")[1]
                               .split("\n\n")[0], re.M))
    from mailgate.config.directory import RULE_MATCHERS
    assert sorted({"name", "department", "priority", *RULE_MATCHERS} ^ rule_keys) == []


def subcommands() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def test_every_command_and_option_is_in_the_readme() -> None:
    missing = []
    for name, parser in subcommands().items():
        if f"`mailgate {name}" not in README:
            missing.append(f"mailgate {name}")
        for action in parser._actions:
            missing += [f"mailgate {name} {o}" for o in action.option_strings
                        if o.startswith("--") and o != "--help"
                        and not re.search(re.escape(o) + r"\b", README)]
    assert missing == []


def test_the_help_names_every_command() -> None:
    description = build_parser().description or ""
    assert [n for n in subcommands() if not re.search(rf"\b{n}\b", description)] == []


def test_every_metric_is_in_the_metrics_table_and_no_other() -> None:
    table = README.split("| metric | type | labels | meaning |")[1].split("\n\n")[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (\w+) \|", table, re.M)}
    assert {name: kind for name, (kind, _) in FAMILIES.items()} == rows
    named = set(re.findall(r"\bmailgate_[a-z_]+", README)) - {"mailgate_ack_latency_seconds_bucket"}
    assert sorted(named - set(FAMILIES)) == []


def test_every_message_outcome_counted_is_documented() -> None:
    source = (PACKAGE / "intake" / "pipeline.py").read_text(encoding="utf-8")
    outcomes = set(re.findall(r'Outcome\("(\w+)"', source))
    row = next(line for line in README.splitlines()
               if line.startswith("| `mailgate_messages_total`"))
    assert sorted(o for o in outcomes if f"`{o}`" not in row) == []


def code_events() -> set[str]:
    events = set()
    for path in PACKAGE.rglob("*.py"):
        # log.warning("event", ...), and Log("warning", "event", ...) effects (pipeline.py)
        events |= set(re.findall(r'\b(?:debug|info|warning|error|exception|critical|Log)\('
                                 r'\s*(?:"\w+",\s*)?"([a-z_]+\.[a-z_.]+)"',
                                 path.read_text(encoding="utf-8")))
    return events


def test_every_log_event_in_the_readme_is_logged() -> None:
    table = README.split("| event | level | when |")[1].split("\n\n")[0]
    first_cells = [row.split(" | ")[0] for row in table.splitlines()[2:]]
    listed = {e for cell in first_cells for e in re.findall(r"`([a-z_]+\.[a-z_.]+)`", cell)}
    assert listed and sorted(listed - code_events()) == []
    # Events a sysadmin alerts on must be in the table.
    important = {"mail.sent", "mail.deferred", "mail.failed", "message.quarantined",
                 "imap.error", "reload.rejected", "reload.failed", "task.died",
                 "daemon.started", "daemon.stopped"}
    assert sorted(important - listed) == []


def test_every_log_event_named_in_the_text_is_logged() -> None:
    """`escalation.fired` in a paragraph: any `a.b` whose a is a namespace of events."""
    events = code_events()
    namespaces = {e.split(".")[0] for e in events}
    not_events = {"smtp.mailfrom"}  # an Authentication-Results property
    named = {n for n in re.findall(r"`([a-z_]+\.[a-z_]+)`", README)
             if n.split(".")[0] in namespaces and not n.endswith(".py")} - not_events
    assert named and sorted(named - events) == []


def test_every_module_path_in_the_readme_exists() -> None:
    paths = set(re.findall(r"`((?:mailgate/)?(?:core|tickets|storage|intake|outbound|workers|"
                           r"service|config|connect|cli)/[\w/]*\w\.py)`", README))
    paths |= set(re.findall(r"`(mailgate/[\w/]+\.py)`", README))
    missing = [p for p in paths
               if not (ROOT / p).is_file() and not (PACKAGE / p).is_file()]
    assert paths and sorted(missing) == []


def test_every_module_is_named_in_the_readme() -> None:
    """The Architecture section's map names each module (as `name` or name.py)."""
    unnamed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py", "whatwg_labels.py"):
            continue
        stem = path.stem
        if not re.search(rf"(`{stem}`|\b{stem}\.py\b|`{stem}/|[/(]{stem}[`,)])", README):
            unnamed.append(str(path.relative_to(ROOT)))
    assert unnamed == []


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_anchor_link_resolves_to_a_heading() -> None:
    headings, in_code = [], False
    for line in README.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            headings.append(line.lstrip("#"))
    slugs: set[str] = set()
    for heading in headings:
        slug = github_slug(heading)
        slugs.add(slug if slug not in slugs else f"{slug}-1")
    links = re.findall(r"\]\(#([^)]+)\)", README)
    assert links and sorted(set(links) - slugs) == []


def test_every_file_link_exists() -> None:
    links = [link for link in re.findall(r"\]\(([^)#:]+)\)", README)]
    assert sorted(link for link in links if not (ROOT / link).exists()) == []


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", README, re.S)


def test_every_mailgate_toml_example_loads(tmp_path: Path) -> None:
    """Each example of mailgate.toml settings is accepted as written (on top of [outbox] where
    it has no [smtp]); a CA file that this machine lacks is the only problem allowed."""
    from mailgate.config.settings import load_config
    from mailgate.errors import ConfigError

    blocks = [b for b in toml_blocks() if not re.search(r"^\[\[rule\]\]|^\[calendar", b, re.M)]
    problems = []
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.toml"
        base = "" if re.search(r"^\[smtp\]", block, re.M) else '[outbox]\ndir = "out"\n'
        path.write_text(base + block, encoding="utf-8")
        try:
            load_config(path, "none")
        except ConfigError as exc:
            problems += [p for p in exc.problems if "ca_file: cannot read" not in p]
    assert len(blocks) >= 5 and problems == []


def test_the_directory_examples_load(tmp_path: Path) -> None:
    from mailgate.config.directory import load_directory

    examples = [b for b in toml_blocks() if re.search(r"^\[\[rule\]\]|^\[calendar", b, re.M)]
    departments = "".join(
        f'[[department]]\nkey = "{key}"\naddresses = ["{key}@example.com"]\n'
        f'calendar = "office"\nsla = "standard"\n' for key in ("it", "facilities"))
    path = tmp_path / "directory.toml"
    path.write_text(departments + "".join(examples), encoding="utf-8")
    directory = load_directory(path)
    assert len(examples) == 2
    assert [r.name for r in directory.rules] == ["locked-out", "marked-important",
                                                "help-facilities", "help"]


def test_the_shipped_examples_load_as_the_install_steps_copy_them(tmp_path: Path) -> None:
    """README "Installing it as a service", step 2: both examples and templates/ copied
    into one folder pass `mailgate check` (passwords are not read here)."""
    import shutil

    from mailgate.config.loader import load_setup

    shutil.copy(ROOT / "config" / "mailgate.example.toml", tmp_path / "mailgate.toml")
    shutil.copy(ROOT / "config" / "directory.example.toml", tmp_path / "directory.toml")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    setup = load_setup(tmp_path / "mailgate.toml", "none")
    assert setup.config.templates_dir == tmp_path / "templates"
    assert "cp config/mailgate.example.toml /etc/mailgate/mailgate.toml" in README


def test_the_unit_file_is_as_the_readme_says() -> None:
    """Every directive of systemd/mailgate.service the README quotes with a value has that
    value in the unit (LoadCredential= examples are lines a reader adds), and the install
    steps' paths are the unit's."""
    unit = (ROOT / "systemd" / "mailgate.service").read_text(encoding="utf-8")
    directives = set(re.findall(r"^(\w+)=", unit, re.M))
    quoted = re.findall(r"`([A-Z]\w+)=([^`]+)`", README)
    wrong = [f"{name}={value}" for name, value in quoted
             if name in directives and name != "LoadCredential"
             and not re.search(rf"^{name}={re.escape(value)}$", unit, re.M)]
    assert quoted and wrong == []
    config = "/usr/local/bin/mailgate --config /etc/mailgate/mailgate.toml"
    for line in (f"ExecStartPre={config} check", f"ExecStart={config} run",
                 f"ExecReload={config} check", "Type=notify",
                 "LoadCredential=smtp:/etc/mailgate/credentials/smtp",
                 "LoadCredential=imap-it:/etc/mailgate/credentials/imap-it"):
        assert re.search(rf"^{re.escape(line)}$", unit, re.M), line
    assert "ln -s /opt/mailgate/bin/mailgate /usr/local/bin/mailgate" in README
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"share/doc/mailgate" = ["README.md"]' in pyproject
    assert "Documentation=file:///opt/mailgate/share/doc/mailgate/README.md" in unit


def test_every_template_is_in_the_templates_section() -> None:
    from mailgate.core.render import OPTIONAL, REQUIRED

    section = README.split("\n## Templates\n")[1].split("\n## ")[0]
    shipped = {p.name.split(".")[0] for p in (ROOT / "templates").glob("*.j2")}
    names = set(REQUIRED) | set(OPTIONAL) | shipped
    assert sorted(n for n in names if f"`{n}`" not in section) == []


def test_every_benchmark_is_in_the_bench_readme() -> None:
    bench = ROOT / "bench"
    text = (bench / "README.md").read_text(encoding="utf-8")
    scripts = {p.name for p in bench.glob("*.py")}
    named = set(re.findall(r"`(\w+\.py)`", text))
    assert sorted(scripts - named) == [] and sorted(named - scripts) == []
