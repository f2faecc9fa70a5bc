"""`mailgate keys status|rotate`: the reply-key secrets in the state directory.

Rotating puts a new signing secret first; mail already sent keeps working until its keys
expire ([security] reply_key_days), because the old secret stays in the file, retired,
until then. The daemon reads the file at start and on reload (`systemctl reload mailgate`).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta

from mailgate.config.settings import config_path, load_config
from mailgate.service import keyfile


def cmd_keys(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config), secrets="none")
    ttl = timedelta(days=config.security.reply_key_days)
    now = datetime.now(UTC)
    try:
        if args.action == "rotate":
            new_id, kept = keyfile.rotate(config.state_dir, ttl, now)
            print(f"new signing secret {new_id}; {kept} older secret(s) keep verifying the "
                  f"keys they signed for up to {ttl.days} days. Reload the daemon "
                  "(systemctl reload mailgate) so new mail is signed with it.")
            return 0
        ring = keyfile.load(config.state_dir, ttl, now, create=False)
    except keyfile.KeyFileError as exc:
        print(f"mailgate keys: {exc}", file=sys.stderr)
        return 1
    ids = [key_id for key_id, _ in ring.secrets]
    if args.json:
        print(json.dumps({"signing": ids[:1], "verifying": ids, "reply_key_days": ttl.days}))
    elif not ids:
        print(f"no reply-key file yet in {config.state_dir} (the daemon makes one at start)")
    else:
        print(f"signing with {ids[0]}; verifying {', '.join(ids)}; keys valid {ttl.days} days")
    return 0
