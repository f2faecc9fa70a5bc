"""The directory: people, rules, SLA policies and calendars load, and every mistake is one
line naming the file and the key, all of them at once."""

from __future__ import annotations

import tomllib
from datetime import date, timedelta
from pathlib import Path

import pytest

from mailgate.cli.people import (
    check_against,
    import_people,
    parse_people_csv,
    people_toml,
    toml_string,
    write_atomically,
)
from mailgate.config.directory import (
    Directory,
    EscalationNotify,
    load_directory,
    manager_cycles,
)
from mailgate.core.businesstime import BusinessCalendar
from mailgate.core.model import Priority
from mailgate.errors import ConfigError
from tests.factories import EXAMPLE_DIRECTORY
from tests.test_cli import run

BASE = """
[[department]]
key = "it"
addresses = ["it@example.com"]
team = ["alice@example.com"]
lead = "carol@example.com"
head = "dave@example.com"
notify = "it-team@example.com"

[[department]]
key = "fac"
addresses = ["fac@example.com"]
"""

PEOPLE = """
[[person]]
email = "alice@example.com"
department = "it"
manager = "carol@example.com"
[[person]]
email = "carol@example.com"
department = "it"
manager = "dave@example.com"
[[person]]
email = "dave@example.com"
department = "it"
manager = "ivan@example.com"
role = "head of IT"
[[person]]
email = "ivan@example.com"
name = "Ivan"
"""


def load(tmp_path: Path, text: str, name: str = "directory.toml") -> Directory:
    path = tmp_path / name
    path.write_text(text)
    return load_directory(path)


def problems(tmp_path: Path, text: str) -> str:
    path = tmp_path / "directory.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_directory(path)
    lines = caught.value.problems
    assert all(line.startswith(str(tmp_path)) for line in lines), lines
    assert all("\n" not in line for line in lines)
    return "\n".join(lines)


# --- people -------------------------------------------------------------------------------

def test_example_directory_has_people_rules_calendars_and_policies() -> None:
    directory = load_directory(EXAMPLE_DIRECTORY)
    assert directory.person("Dave@Example.com").manager == "ivan@example.com"  # type: ignore[union-attr]
    assert [r.name for r in directory.rules][:2] == ["locked-out", "marked-important"]
    assert set(directory.calendars) == {"office"}
    standard = directory.sla_policies["standard"]
    assert standard.next_response[Priority.HIGH] == timedelta(hours=2)
    assert standard.re_escalate_every == timedelta(hours=4)
    assert standard.notify == EscalationNotify()
    assert directory.sla_policies["finance"].next_response == {}


def test_people_mistakes_are_all_reported(tmp_path: Path) -> None:
    text = problems(tmp_path, BASE + PEOPLE + """
[[person]]
email = "alice@example.com"
[[person]]
email = "zed@example.com"
department = "hr"
manager = "nobody@example.com"
shoe_size = 44
[[person]]
email = "not an address"
""")
    for expected in (
            "person[4].email: duplicate person 'alice@example.com' (first at",
            "person[5].department: unknown department 'hr' (known: fac, it)",
            "person[5].manager: nobody@example.com is not a person",
            "person[5].shoe_size: unknown key",
            "person[6].email: not an email address: 'not an address'"):
        assert expected in text, expected


def test_department_members_must_be_people_once_people_exist(tmp_path: Path) -> None:
    text = problems(tmp_path, BASE + """
[[person]]
email = "alice@example.com"
""")
    assert "department[0].lead: carol@example.com is not a person" in text
    assert "department[0].head: dave@example.com is not a person" in text
    assert "department[0].team" not in text
    assert "notify" not in text  # a list address, not a person


def test_without_people_members_are_just_addresses(tmp_path: Path) -> None:
    directory = load(tmp_path, BASE)
    assert directory.people == {}
    assert directory.recipients(directory.departments["it"], ["head", "head_manager"],
                                None) == ("dave@example.com",)


def test_manager_cycle_is_reported_as_a_chain(tmp_path: Path) -> None:
    text = problems(tmp_path, BASE + PEOPLE.replace(
        'manager = "ivan@example.com"', 'manager = "alice@example.com"'))
    assert "person[0].manager: manager chain is a cycle: alice@example.com -> " \
           "carol@example.com -> dave@example.com -> alice@example.com" in text
    assert text.count("chain is a cycle") == 1


def test_manager_cycles_finds_each_cycle_once() -> None:
    managers = {"a": "b", "b": "a", "c": "a", "d": "d", "e": None, "f": "x"}
    assert manager_cycles(managers) == [["a", "b", "a"], ["d", "d"]]
    assert manager_cycles({"a": "b", "b": "c", "c": None}) == []


def test_people_file_is_read_relative_to_the_directory(tmp_path: Path) -> None:
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "people.toml").write_text(PEOPLE)
    directory = load(tmp_path, 'people_file = "hr/people.toml"\n' + BASE)
    assert directory.people_file == tmp_path / "hr" / "people.toml"
    assert directory.person("carol@example.com").role == ""  # type: ignore[union-attr]
    assert len(directory.people) == 4


def test_people_file_problems_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "people.toml").write_text(PEOPLE + '[[person]]\nemail = "carol@example.com"\n'
                                          'department = "hr"\n[extra]\n')
    text = problems(tmp_path, 'people_file = "people.toml"\n' + BASE + """
[[person]]
email = "ivan@example.com"
""")
    people = tmp_path / "people.toml"
    assert f"{people}: person[4].email: duplicate person 'carol@example.com'" in text
    assert f"{people}: person[4].department: unknown department 'hr'" in text
    assert f"{people}: extra: unknown key" in text
    assert f"{people}: person[3].email: duplicate person 'ivan@example.com' (first at " \
           f"{tmp_path / 'directory.toml'}: person[0])" in text


def test_missing_people_file_is_one_problem(tmp_path: Path) -> None:
    text = problems(tmp_path, 'people_file = "people.toml"\n' + BASE)
    assert text == (f"{tmp_path / 'directory.toml'}: people_file: {tmp_path / 'people.toml'}: "
                    "file not found; create it with `mailgate directory import people.csv`")


# --- recipients ---------------------------------------------------------------------------

def test_recipients_resolve_roles_in_order_without_duplicates(tmp_path: Path) -> None:
    directory = load(tmp_path, BASE + PEOPLE)
    it = directory.departments["it"]
    assert directory.recipients(it, ["assignee", "team"], "Alice@example.com") == (
        "alice@example.com",)
    assert directory.recipients(it, ["assignee", "lead", "head", "head_manager"], None) == (
        "carol@example.com", "dave@example.com", "ivan@example.com")
    assert directory.recipients(it, ["notify", "team"], None) == (
        "it-team@example.com", "alice@example.com")


def test_recipients_skip_roles_nobody_fills(tmp_path: Path) -> None:
    directory = load(tmp_path, BASE + PEOPLE)
    fac = directory.departments["fac"]  # no team, lead, head or notify address
    assert directory.recipients(fac, ["assignee", "team", "lead", "head", "head_manager"],
                                None) == ()
    with pytest.raises(ValueError, match="unknown role 'boss'"):
        directory.recipients(fac, ["boss"], None)


def test_team_falls_back_to_the_notify_address(tmp_path: Path) -> None:
    directory = load(tmp_path, BASE.replace('team = ["alice@example.com"]\n', ""))
    assert directory.recipients(directory.departments["it"], ["team"], None) == (
        "it-team@example.com",)


def test_head_manager_is_skipped_when_the_head_has_none(tmp_path: Path) -> None:
    directory = load(tmp_path, BASE + PEOPLE.replace('manager = "ivan@example.com"\n', ""))
    assert directory.recipients(directory.departments["it"], ["head", "head_manager"],
                                None) == ("dave@example.com",)


# --- SLA policies -------------------------------------------------------------------------

def test_sla_extensions_parse(tmp_path: Path) -> None:
    directory = load(tmp_path, BASE.replace('key = "it"', 'key = "it"\nsla = "gold"') + """
[sla.gold]
first_response = { high = "30m" }
next_response = { high = "1h", normal = "4h" }
re_escalate_every = "2h"
[sla.gold.notify]
breach = ["lead", "head", "head_manager"]
""")
    gold = directory.sla_for(directory.departments["it"])
    assert gold.first_response[Priority.HIGH] == timedelta(minutes=30)
    assert gold.first_response[Priority.LOW] == timedelta(days=1)  # the default
    assert gold.next_response == {Priority.HIGH: timedelta(hours=1),
                                  Priority.NORMAL: timedelta(hours=4)}
    assert gold.re_escalate_every == timedelta(hours=2)
    assert gold.notify.breach == ("lead", "head", "head_manager")
    assert gold.notify.warning == ("assignee", "team")
    assert gold.notify.re_escalation == ("head", "head_manager")
    default = directory.sla_for(directory.departments["fac"])
    assert default.re_escalate_every is None and default.next_response == {}


def test_sla_mistakes(tmp_path: Path) -> None:
    text = problems(tmp_path, BASE + """
[sla.gold]
next_response = { high = "soon", urgentish = "1h" }
re_escalate_every = "0s"
warn_at = [0.5, 2]
[sla.gold.notify]
warning = ["team", "boss"]
breech = ["head"]
[sla.silver]
re_escalate_every = "often"
""")
    for expected in ("sla.gold.next_response.high: not a duration",
                     "sla.gold.next_response.urgentish: unknown key",
                     "sla.gold.re_escalate_every: must be longer than zero",
                     "sla.gold.warn_at: every entry must be a fraction",
                     "sla.gold.notify.warning: unknown role 'boss'; use assignee, team, notify, "
                     "lead, head, head_manager",
                     "sla.gold.notify.breech: unknown key",
                     "sla.silver.re_escalate_every: not a duration"):
        assert expected in text, expected


# --- calendars ----------------------------------------------------------------------------

def test_calendars_are_parsed_and_found_per_department(tmp_path: Path) -> None:
    directory = load(tmp_path, BASE.replace('key = "it"', 'key = "it"\ncalendar = "office"')
                     + """
[calendar.office]
timezone = "Europe/Berlin"
holidays = ["2026-12-24"]
[calendar.office.hours]
mon = ["09:00-17:00"]
""")
    office = directory.calendar_for(directory.departments["it"])
    assert office.name == "office" and date(2026, 12, 24) in office.holidays
    assert directory.calendar_for(directory.departments["fac"]) == BusinessCalendar.always()


def test_example_calendar_knows_its_hours() -> None:
    directory = load_directory(EXAMPLE_DIRECTORY)
    office = directory.calendar_for(directory.departments["it"])
    assert [str(i) for i in office.hours[4]] == ["09:00-12:30", "13:30-15:00"]  # Friday
    assert office.hours[5] == ()  # Saturday


def test_calendar_mistakes_are_folded_in_with_the_file(tmp_path: Path) -> None:
    text = problems(tmp_path, BASE.replace('key = "it"', 'key = "it"\ncalendar = "office"')
                    .replace('key = "fac"', 'key = "fac"\ncalendar = "plant"') + """
[calendar.office]
timezone = "Mars/Olympus"
hours = { mon = ["9-5"] }
""")
    file = tmp_path / "directory.toml"
    assert f"{file}: calendar.office.timezone: unknown time zone 'Mars/Olympus'" in text
    assert f"{file}: calendar.office.hours.mon: '9-5' is not HH:MM-HH:MM" in text
    assert f"{file}: department[1].calendar: unknown calendar 'plant'; define " \
           "[calendar.plant]" in text
    assert "department[0].calendar" not in text  # defined, only broken: said above


def test_calendar_holiday_lookup_is_passed_through(tmp_path: Path) -> None:
    path = tmp_path / "directory.toml"
    path.write_text(BASE + '[calendar.office]\ntimezone = "UTC"\nhours = "24x7"\n'
                    'holiday_country = "XX"\n')

    def lookup(country: str, subdivision: str | None, years: range) -> set[date]:
        assert country == "XX"
        return {date(2026, 1, 1)}

    directory = load_directory(path, holiday_lookup=lookup)
    assert directory.calendars["office"].holidays == {date(2026, 1, 1)}


# --- CSV import ---------------------------------------------------------------------------

CSV = """Email,NAME,department,Manager,role,cost centre
alice@example.com,Alice Adams,it,carol@example.com,agent,100

Carol@Example.com,"Carol ""CC"" Clark",it,dave@example.com,lead,100
dave@example.com,"Dave""]
[x]
a = 1",it,,head,1
"""


def test_csv_rows_parse_with_line_numbers() -> None:
    rows, found = parse_people_csv(CSV, "people.csv")
    assert found == []
    assert [(r.line, r.person.email) for r in rows] == [
        (2, "alice@example.com"), (4, "carol@example.com"), (5, "dave@example.com")]
    assert rows[1].person.name == 'Carol "CC" Clark'
    assert rows[2].person.manager is None and rows[2].person.role == "head"


def test_toml_injection_from_a_cell_is_impossible() -> None:
    rows, _ = parse_people_csv(CSV, "people.csv")
    data = tomllib.loads(people_toml([r.person for r in rows]))
    assert list(data) == ["person"] and len(data["person"]) == 3
    assert data["person"][2]["name"] == 'Dave"]\n[x]\na = 1'
    hostile = 'a\\"b\x00c\x7fd\te\r\n"""\'\'\'\u2028'
    assert tomllib.loads(f"v = {toml_string(hostile)}")["v"] == hostile


def test_csv_bad_rows_are_all_reported() -> None:
    text = ("email;name;department;manager\n"
            "ann@example.com;Ann;it;\n"
            ";No Address;it;\n"
            "not-an-address;X;it;\n"
            "ANN@example.com;Ann again;it;\n"
            f"long@example.com;{'x' * 600};it;\n"
            "bob@example.com;Bob;it;boss\n")
    rows, found = parse_people_csv(text, "hr.csv")
    assert [r.person.email for r in rows] == ["ann@example.com"]  # semicolons understood
    assert found == [
        "hr.csv:3: email: empty; every row needs the person's address",
        "hr.csv:4: email: not an email address: 'not-an-address'",
        "hr.csv:5: email: ann@example.com is already on line 2",
        "hr.csv:6: name: longer than 500 characters",
        "hr.csv:7: manager: not an email address: 'boss'"]


def test_csv_unbalanced_quote_is_reported_not_swallowed() -> None:
    # Lenient CSV reading would make "Ann... the rest of the file" one name.
    rows, found = parse_people_csv('email,name\na@example.com,Ann\nb@example.com,"Bob\n'
                                   'c@example.com,Cy\n', "hr.csv")
    assert found == ["hr.csv:3: unreadable row: unexpected end of data"]
    assert [r.person.email for r in rows] == ["a@example.com"]  # and refused as a whole
    _, found = parse_people_csv('email,name\na@example.com,"Ann"x\n', "hr.csv")
    assert found == ["hr.csv:2: unreadable row: ',' expected after '\"'"]


def test_csv_needs_a_header_row() -> None:
    rows, found = parse_people_csv("ann@example.com,Ann,it\n", "hr.csv")
    assert rows == []
    assert found == ["hr.csv:1: no email column in the header row (found 'ann@example.com', "
                     "'ann', 'it'); the first row must name the columns: email, name, "
                     "department, manager, role"]
    assert parse_people_csv("", "hr.csv")[1][0].startswith("hr.csv:1: no email column")


def test_csv_checked_against_the_directory() -> None:
    rows, _ = parse_people_csv("email,department,manager\n"
                               "a@example.com,it,b@example.com\n"
                               "b@example.com,hr,a@example.com\n"
                               "c@example.com,it,nobody@example.com\n"
                               "ivan@example.com,,\n", "hr.csv")
    found = check_against(rows, "hr.csv", {"it", "fac"}, {"ivan@example.com": None})
    assert found == [
        "hr.csv:3: department: unknown department 'hr' (known: fac, it)",
        "hr.csv:4: manager: nobody@example.com is not a person",
        "hr.csv:5: email: ivan@example.com is also a [[person]] in directory.toml; keep "
        "each person in one place",
        "hr.csv:2: manager: manager chain is a cycle: a@example.com -> b@example.com -> "
        "a@example.com"]


def test_write_atomically_keeps_the_old_file_on_a_veto(tmp_path: Path) -> None:
    target = tmp_path / "people.toml"
    target.write_text("old")
    assert write_atomically(target, "new", lambda p: [f"{p}: bad"]) == [
        f"{target} (as imported): bad"]
    assert target.read_text() == "old"
    assert write_atomically(target, "new") == []
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["people.toml"]  # no temp files left


def setup_files(tmp_path: Path, people: str = "") -> Path:
    """mailgate.toml + directory.toml with people_file, like a real installation."""
    (tmp_path / "directory.toml").write_text('people_file = "people.toml"\n' + BASE + people)
    config = tmp_path / "mailgate.toml"
    config.write_text('[directory]\npath = "directory.toml"\n[outbox]\ndir = "out"\n')
    return config


def test_import_writes_the_people_file_and_it_loads(tmp_path: Path) -> None:
    setup_files(tmp_path)
    (tmp_path / "hr.csv").write_text(CSV.replace(",,head", ",ivan@example.com,head")
                                     + "ivan@example.com,Ivan,,,COO\n")
    done = import_people(tmp_path / "hr.csv", None, tmp_path / "directory.toml")
    assert done.path == tmp_path / "people.toml" and done.people == 4
    directory = load_directory(tmp_path / "directory.toml")
    assert directory.person("dave@example.com").name == 'Dave"]\n[x]\na = 1'  # type: ignore[union-attr]
    assert directory.recipients(directory.departments["it"], ["head_manager"], None) == (
        "ivan@example.com",)


def test_import_refuses_what_would_break_the_directory(tmp_path: Path) -> None:
    setup_files(tmp_path)
    (tmp_path / "people.toml").write_text(PEOPLE)
    (tmp_path / "hr.csv").write_text("email,department\nalice@example.com,it\n")
    with pytest.raises(ConfigError) as caught:
        import_people(tmp_path / "hr.csv", None, tmp_path / "directory.toml")
    # carol (lead) and dave (head) are gone from the export: the old file stays.
    assert caught.value.problems == [
        f"{tmp_path / 'directory.toml'}: department[0].lead: carol@example.com is not a "
        "person; add a [[person]] for them (or import people)",
        f"{tmp_path / 'directory.toml'}: department[0].head: dave@example.com is not a "
        "person; add a [[person]] for them (or import people)"]
    assert (tmp_path / "people.toml").read_text() == PEOPLE


def test_import_reports_format_and_directory_problems_in_one_run(tmp_path: Path) -> None:
    setup_files(tmp_path)
    (tmp_path / "hr.csv").write_text("email,department\nnot-an-address,it\n"
                                     "erin@example.com,hr\n")
    with pytest.raises(ConfigError) as caught:
        import_people(tmp_path / "hr.csv", None, tmp_path / "directory.toml")
    found = caught.value.problems
    assert len(found) == 2, found
    assert found[0].startswith(f"{tmp_path / 'hr.csv'}:2: email")
    assert found[1].startswith(f"{tmp_path / 'hr.csv'}:3: department: unknown department")


def test_a_row_left_out_is_not_reported_again_as_someone_s_manager(tmp_path: Path) -> None:
    setup_files(tmp_path)
    (tmp_path / "hr.csv").write_text("email,department,manager\n"
                                     "boss@example.com,it,not an address\n"
                                     "ann@example.com,it,boss@example.com\n")
    with pytest.raises(ConfigError) as caught:
        import_people(tmp_path / "hr.csv", None, tmp_path / "directory.toml")
    assert caught.value.problems == [
        f"{tmp_path / 'hr.csv'}:2: manager: not an email address: 'not an address'"]


def test_import_without_a_people_file_needs_output(tmp_path: Path) -> None:
    (tmp_path / "directory.toml").write_text(BASE)
    (tmp_path / "hr.csv").write_text("email\na@example.com\n")
    with pytest.raises(ConfigError, match="people_file: no people file to write"):
        import_people(tmp_path / "hr.csv", None, tmp_path / "directory.toml")
    done = import_people(tmp_path / "hr.csv", tmp_path / "out.toml", None)
    assert tomllib.loads(done.path.read_text()) == {"person": [{"email": "a@example.com"}]}


def test_import_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "hr.csv").write_bytes("email,name\na@example.com,Jürgen\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        import_people(tmp_path / "hr.csv", tmp_path / "out.toml", None)
    assert not (tmp_path / "out.toml").exists()


# --- through the command line -------------------------------------------------------------

def test_cli_directory_import(tmp_path: Path) -> None:
    config = setup_files(tmp_path)
    (tmp_path / "hr.csv").write_text("email,name,department,manager,role\n" + "\n".join(
        f"{who}@example.com,{who.title()},it,{boss},x" for who, boss in (
            ("alice", "carol@example.com"), ("carol", "dave@example.com"), ("dave", ""))))
    result = run("--config", str(config), "directory", "import", str(tmp_path / "hr.csv"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{tmp_path / 'people.toml'}: wrote 3 people"
    assert run("--config", str(config), "check").returncode == 0


def test_cli_directory_import_reports_bad_rows_and_writes_nothing(tmp_path: Path) -> None:
    config = setup_files(tmp_path)
    (tmp_path / "hr.csv").write_text("email,department\nalice@example.com,it\nbad,it\n"
                                     "x@example.com,hr\n")
    result = run("--config", str(config), "directory", "import", str(tmp_path / "hr.csv"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"{tmp_path / 'hr.csv'}:3: email: not an email address: 'bad'",
        f"{tmp_path / 'hr.csv'}:4: department: unknown department 'hr' (known: fac, it)"]
    assert not (tmp_path / "people.toml").exists()


def test_cli_check_reports_directory_problems_beside_config_ones(tmp_path: Path) -> None:
    config = setup_files(tmp_path, PEOPLE.replace('"ivan@example.com"\nrole',
                                                  '"alice@example.com"\nrole'))
    config.write_text(config.read_text() + "[smtp]\nhots = 1\n")
    (tmp_path / "directory.toml").write_text((tmp_path / "directory.toml").read_text()
                                             .replace('people_file = "people.toml"\n', ""))
    result = run("--config", str(config), "check")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert f"{config}: smtp.hots: unknown key (check the spelling against the README)" in lines
    assert any(line.startswith(f"{tmp_path / 'directory.toml'}: person[0].manager: manager "
                               "chain is a cycle: alice@example.com -> ") for line in lines)
