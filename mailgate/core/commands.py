"""Agent commands in the first lines of a reply: #resolve, #assign bob, ... (pure; no I/O).

Commands are the leading lines of the text that start with "#" and a word; the first other
line ends them (blank lines before and between them are skipped). Everything after them is
the message. A reply is all or nothing: one bad command line and none is executed, so a
typo such as "#ntoe" can never turn an internal note into a public answer.

Who may run commands and what they do to a ticket is decided elsewhere (pipeline.py,
tickets/reply.py); this module only reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

PRIORITIES = ("low", "normal", "high")
# name -> what its argument is: None (none; optional free text is kept as a reason),
# "person", "department" or "priority" (required).
COMMANDS: dict[str, str | None] = {
    "note": None, "resolve": None, "close": None, "waiting": None, "reopen": None,
    "take": None, "assign": "person", "priority": "priority", "transfer": "department",
}
# Commands that set the ticket's status: at most one per reply.
STATUS_COMMANDS = ("resolve", "close", "waiting", "reopen")
MAX_COMMAND_LINES = 10
_LINE = re.compile(r"^#([A-Za-z][A-Za-z_-]*)(?:\s+(.*))?$")

HELP = """\
#note                 internal: the team sees the rest of the mail, the requester never
#resolve [text]       resolved: the requester gets a summary and a rating question
#close [reason]       closed without a survey
#waiting              waiting on the requester: SLA clocks pause until they reply
#reopen               open again
#take                 assign the ticket to yourself
#assign <person>      assign to a team member (address or first part of it)
#priority <p>         low, normal or high
#transfer <dept>      hand over to another department (key, name or ticket prefix)"""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arg: str = ""  # the required argument, or the optional free text after the command

    def __str__(self) -> str:
        return f"#{self.name} {self.arg}".rstrip()


@dataclass(frozen=True, slots=True)
class Parsed:
    commands: tuple[Command, ...] = ()
    errors: tuple[str, ...] = ()  # one line each; when not empty, nothing may be executed
    text: str = ""  # the message without the command lines
    unknown_only: bool = False  # every command line named an unknown command

    @property
    def note(self) -> bool:
        return any(c.name == "note" for c in self.commands)

    @property
    def actions(self) -> tuple[Command, ...]:
        """The commands that change the ticket (#note only marks the message)."""
        return tuple(c for c in self.commands if c.name != "note")

    @property
    def has_commands(self) -> bool:
        return bool(self.commands or self.errors)


def parse_commands(text: str) -> Parsed:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    commands: list[Command] = []
    errors: list[str] = []
    unknown = 0
    index = 0
    seen = 0
    while index < len(lines):
        line = lines[index].strip()
        if not line:
            index += 1
            continue
        found = _LINE.match(line)
        if not found:
            break
        seen += 1
        index += 1
        if seen > MAX_COMMAND_LINES:
            errors.append(f"more than {MAX_COMMAND_LINES} command lines")
            break
        command, error = _command(found.group(1).lower(), (found.group(2) or "").strip())
        if error:
            errors.append(error)
            if command is None and error.startswith("unknown"):
                unknown += 1
        if command:
            commands.append(command)
    errors += _conflicts(commands)
    rest = "\n".join(lines[index:]).strip("\n")
    return Parsed(tuple(commands), tuple(errors), rest,
                  unknown_only=bool(unknown) and unknown == seen)


def _command(name: str, arg: str) -> tuple[Command | None, str | None]:
    if name not in COMMANDS:
        return None, f"unknown command #{name} (known: " + ", ".join(
            f"#{n}" for n in COMMANDS) + ")"
    kind = COMMANDS[name]
    if kind is None:
        return Command(name, arg[:500]), None
    if not arg:
        return None, f"#{name} needs a {kind}, e.g. " + {
            "person": "#assign bob@example.com", "priority": "#priority high",
            "department": "#transfer facilities"}[kind]
    if kind == "priority" and arg.lower() not in PRIORITIES:
        return None, f"#priority {arg}: expected one of {', '.join(PRIORITIES)}"
    value = arg.split()[0] if kind in ("person", "priority") else arg
    return Command(name, value.lower() if kind == "priority" else value), None


def _conflicts(commands: list[Command]) -> list[str]:
    errors = []
    names = [c.name for c in commands]
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            errors.append(f"#{name} given more than once")
    status = [f"#{n}" for n in names if n in STATUS_COMMANDS]
    if len(set(status)) > 1:
        errors.append(f"{' and '.join(dict.fromkeys(status))} contradict each other; "
                      "give one")
    if "take" in names and "assign" in names:
        errors.append("#take and #assign contradict each other; give one")
    return errors


# Read from the stripped line, possessively: "1", spaces and "x" backtracked through
# three adjacent \s* in cubic time (2,000 spaces: 17 s), and any sender can put such a
# line in a reply to a resolved ticket.
_RATING = re.compile(r"([1-5])(?:\s*+/\s*+5)?\s*+[.!]?")


RATING_LABELS = {1: "not at all", 2: "not really", 3: "partly", 4: "mostly", 5: "very"}


def rating_links(address: str, ref: str, key: str = "") -> list[dict[str, str | int]]:
    """One mailto: link per score: a click opens a reply that parse_rating reads (the
    score alone on the first line) and that threads by the [REF] in its subject. A mail
    opened from a link has no In-Reply-To, so the requester's reply key rides in the body,
    below a signature line (trim_reply leaves it out of the text)."""
    signed = f"{{n}}\r\n\r\n-- \r\n{key}" if key else "{n}"
    return [{"score": n, "label": label,
             "url": f"mailto:{quote(address, safe='@')}?subject="
                    f"{quote(f'[{ref}] Rating: {n}', safe='')}"
                    f"&body={quote(signed.format(n=n), safe='')}"}
            for n, label in RATING_LABELS.items()]


def parse_rating(text: str) -> tuple[int, str] | None:
    """A satisfaction answer: the first non-empty line is one digit 1-5 (also "4/5" or
    "4."); the lines after it are the comment. None when the text is something else."""
    lines = text.replace("\r\n", "\n").strip().split("\n")
    found = _RATING.fullmatch(lines[0].strip()) if lines else None
    if not found:
        return None
    return int(found.group(1)), "\n".join(lines[1:]).strip()[:2000]
