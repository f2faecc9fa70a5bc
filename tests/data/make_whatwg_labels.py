#!/usr/bin/env python3
"""Regenerate mailgate/whatwg_labels.py from tests/data/whatwg-encodings.json.

    python tests/data/make_whatwg_labels.py > mailgate/whatwg_labels.py

The JSON is encodings.json of https://github.com/whatwg/encoding (the Encoding Standard's
label table, BSD-3-Clause where used in code; see that repository's LICENSE), copied
unchanged. tests/test_charsets.py checks the module is what this script writes.
"""

from __future__ import annotations

import json
from pathlib import Path

SOURCE = Path(__file__).with_name("whatwg-encodings.json")
UPSTREAM = "whatwg/encoding encodings.json @ 02b303619962bd0fce3651c460117f67cd8c2cd4"


def render(groups: list[dict]) -> str:
    lines = [
        '"""The WHATWG Encoding Standard\'s label table: label -> encoding name. GENERATED.',
        "",
        f"Source: {UPSTREAM}",
        "(BSD-3-Clause as used in code). Regenerate with tests/data/make_whatwg_labels.py;",
        "do not edit by hand. mailgate/charsets.py maps each name to a Python codec.",
        '"""',
        "",
        "LABELS: dict[str, str] = {",
    ]
    pairs = sorted((label, enc["name"]) for group in groups for enc in group["encodings"]
                   for label in enc["labels"])
    lines += [f'    "{label}": "{name}",' for label, name in pairs]
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(json.loads(SOURCE.read_text())), end="")
