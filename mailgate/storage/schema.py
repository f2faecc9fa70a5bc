"""The database schema as an ordered list of migrations; PRAGMA user_version counts them.

Times are stored as Unix seconds (REAL, UTC) so SLA and outbox queries compare numbers.
Append new migrations; never edit one that has shipped.
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: intake -- tickets, messages, receipts, events, outbox, mailbox positions, quarantine
    """
    CREATE TABLE tickets (
        id INTEGER PRIMARY KEY,
        ref TEXT NOT NULL UNIQUE,
        department TEXT NOT NULL,
        number INTEGER NOT NULL,
        subject TEXT NOT NULL,
        requester TEXT NOT NULL,
        requester_name TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        priority TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX tickets_department_status ON tickets(department, status);
    CREATE INDEX tickets_requester ON tickets(requester);

    CREATE TABLE counters (
        prefix TEXT PRIMARY KEY,
        next_number INTEGER NOT NULL
    );

    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        dedupe_key TEXT NOT NULL UNIQUE,
        message_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        kind TEXT NOT NULL,
        sender TEXT NOT NULL,
        sender_name TEXT NOT NULL DEFAULT '',
        recipients TEXT NOT NULL,
        subject TEXT NOT NULL,
        sent_date TEXT,
        body TEXT NOT NULL,
        attachments TEXT NOT NULL,
        defects TEXT NOT NULL,
        size INTEGER NOT NULL,
        source TEXT NOT NULL,
        received_at REAL NOT NULL,
        raw BLOB NOT NULL
    );
    CREATE INDEX messages_message_id ON messages(message_id) WHERE message_id != '';

    -- One row per (message, department) it was received for: the dedupe record.
    CREATE TABLE receipts (
        dedupe_key TEXT NOT NULL,
        department TEXT NOT NULL,
        message INTEGER NOT NULL REFERENCES messages(id),
        outcome TEXT NOT NULL,
        PRIMARY KEY (dedupe_key, department)
    ) WITHOUT ROWID;

    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        ticket INTEGER REFERENCES tickets(id),
        mail_from TEXT NOT NULL,
        recipients TEXT NOT NULL,
        raw BLOB NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        last_error TEXT,
        created_at REAL NOT NULL,
        sent_at REAL
    );
    CREATE INDEX outbox_due ON outbox(next_attempt) WHERE status = 'queued';
    CREATE INDEX outbox_rate ON outbox(kind, recipients, created_at);

    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ticket INTEGER NOT NULL REFERENCES tickets(id),
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT,
        message INTEGER REFERENCES messages(id),
        outgoing INTEGER REFERENCES outbox(id),
        detail TEXT
    );
    CREATE INDEX events_ticket ON events(ticket, id);
    CREATE INDEX events_message ON events(message) WHERE message IS NOT NULL;
    CREATE INDEX events_outgoing ON events(outgoing) WHERE outgoing IS NOT NULL;

    CREATE TABLE ticket_links (
        ticket INTEGER NOT NULL REFERENCES tickets(id),
        other INTEGER NOT NULL REFERENCES tickets(id),
        PRIMARY KEY (ticket, other)
    ) WITHOUT ROWID;

    CREATE TABLE mailboxes (
        name TEXT PRIMARY KEY,
        uidvalidity INTEGER,
        last_uid INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'unknown',
        state_at REAL,
        last_error TEXT,
        last_message_at REAL
    );

    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        dedupe_key TEXT,
        sender TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        raw BLOB NOT NULL,
        status TEXT NOT NULL DEFAULT 'held'
    );
    CREATE UNIQUE INDEX quarantine_key ON quarantine(dedupe_key);
    CREATE INDEX quarantine_status ON quarantine(status, id);
    """,
    # 2: how far the sender of each message can be believed (mailgate/trust.py)
    """
    ALTER TABLE messages ADD COLUMN sender_trust TEXT NOT NULL DEFAULT '';
    """,
    # 3: SLA clocks and escalations (mailgate/sla.py, mailgate/slaclock.py)
    """
    ALTER TABLE tickets ADD COLUMN assignee TEXT;
    ALTER TABLE tickets ADD COLUMN first_response_at REAL;
    ALTER TABLE tickets ADD COLUMN resolved_at REAL;
    ALTER TABLE tickets ADD COLUMN paused_at REAL;  -- waiting on the requester: clocks stop
    -- The scheduler's one index: the earliest instant anything is due on this ticket.
    ALTER TABLE tickets ADD COLUMN next_escalation_at REAL;
    CREATE INDEX tickets_next_escalation ON tickets(next_escalation_at)
        WHERE next_escalation_at IS NOT NULL;

    -- One running or finished clock per ticket and target (first_response, resolution,
    -- next_response). Times are Unix seconds; durations are business seconds.
    CREATE TABLE sla_clocks (
        ticket INTEGER NOT NULL REFERENCES tickets(id),
        target TEXT NOT NULL,
        started_at REAL NOT NULL,
        seconds REAL NOT NULL,
        paused_seconds REAL NOT NULL DEFAULT 0,
        due_at REAL NOT NULL,  -- the breach instant
        next_at REAL,  -- when the next level is due; NULL once every level has fired
        met_at REAL,
        fired INTEGER NOT NULL DEFAULT 0,  -- escalation levels fired (or skipped) so far
        round INTEGER NOT NULL DEFAULT 1,  -- how often this clock was (re)started
        PRIMARY KEY (ticket, target)
    ) WITHOUT ROWID;

    -- Exactly once: a level is fired in the transaction that inserts its row here.
    CREATE TABLE escalations (
        ticket INTEGER NOT NULL REFERENCES tickets(id),
        target TEXT NOT NULL,
        round INTEGER NOT NULL,  -- next_response clocks restart; each start is a new round
        level INTEGER NOT NULL,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        due_at REAL NOT NULL,
        outgoing INTEGER REFERENCES outbox(id),
        PRIMARY KEY (ticket, target, round, level)
    ) WITHOUT ROWID;
    """,
    # 4: conversation by email -- visibility of events, trimmed text, resolution and review
    """
    ALTER TABLE messages ADD COLUMN text TEXT;  -- the body without quotes, signature, commands
    ALTER TABLE events ADD COLUMN visibility TEXT;  -- public | internal (conversation events)
    ALTER TABLE tickets ADD COLUMN closed_at REAL;
    ALTER TABLE tickets ADD COLUMN survey_at REAL;  -- summary and rating question sent
    ALTER TABLE tickets ADD COLUMN rating INTEGER;  -- 1..5, the requester's answer
    ALTER TABLE tickets ADD COLUMN rating_comment TEXT;
    ALTER TABLE tickets ADD COLUMN rated_at REAL;
    -- The auto-closer's query: resolved tickets, oldest resolution first.
    CREATE INDEX tickets_resolved_at ON tickets(resolved_at) WHERE status = 'resolved';
    """,
    # 5: people copied on the request, and attachments kept on disk by SHA-256
    """
    ALTER TABLE tickets ADD COLUMN cc TEXT;  -- JSON list: the request's Cc, kept informed
    -- One row per ticket and file: where it is on disk (<state>/attachments/ab/cdef...),
    -- or sha256 NULL when it was not kept (over [limits] max_attachment_bytes).
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY,
        ticket INTEGER NOT NULL REFERENCES tickets(id),
        message INTEGER NOT NULL REFERENCES messages(id),
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX attachments_ticket ON attachments(ticket, id);
    CREATE INDEX attachments_sha256 ON attachments(sha256) WHERE sha256 IS NOT NULL;
    """,
    # 6: mail written when it is sent (escalation mail: the facts are in `escalations`)
    """
    -- Which writer makes the mail ('escalation'); raw stays empty in the row.
    ALTER TABLE outbox ADD COLUMN draft TEXT;
    -- Whose escalation it was when it fired: a transfer before the mail goes out must not
    -- re-address it (NULL on levels recorded before this version).
    ALTER TABLE escalations ADD COLUMN department TEXT;
    ALTER TABLE escalations ADD COLUMN assignee TEXT;
    -- A fired level is shown from its escalations row; the event that repeated it goes.
    DELETE FROM events WHERE outgoing IS NOT NULL
        AND kind IN ('sla_warning', 'sla_breach', 'sla_re_escalation');
    """,
    # 7: one budget for automatic mail per mailbox and domain; team notifications held in a flood
    """
    -- Whose budget a mail draws on: the recipient's canonical mailbox (plus tag removed,
    -- case folded) for mail to one person, or 'team:<dept>:<sender>' for a team
    -- notification about a request from <sender>; and the recipient's domain.
    ALTER TABLE outbox ADD COLUMN budget TEXT;
    ALTER TABLE outbox ADD COLUMN budget_domain TEXT;
    -- Mail to several people goes out as one copy each (each with its own reply key);
    -- the copies after the first name the first one's Message-ID.
    ALTER TABLE outbox ADD COLUMN copy_of TEXT;
    CREATE INDEX outbox_copy_of ON outbox(copy_of) WHERE copy_of IS NOT NULL;
    CREATE INDEX outbox_budget ON outbox(budget, created_at) WHERE budget IS NOT NULL;
    CREATE INDEX outbox_budget_domain ON outbox(budget_domain, created_at)
        WHERE budget_domain IS NOT NULL;
    -- New requests whose team notification was held back (a flood from one sender); one
    -- summary mail an hour names them (summary: its outbox row).
    CREATE TABLE held_notifications (
        ticket INTEGER PRIMARY KEY REFERENCES tickets(id),
        department TEXT NOT NULL,
        sender TEXT NOT NULL,
        at REAL NOT NULL,
        summary INTEGER REFERENCES outbox(id)
    );
    CREATE INDEX held_pending ON held_notifications(department, sender) WHERE summary IS NULL;
    -- The same message (same key and content) arriving again: counted, not processed.
    ALTER TABLE messages ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE messages ADD COLUMN last_delivered_at REAL;
    """,
    # 8: leases between nodes sharing one database (storage/leases.py, service/cluster.py)
    """
    -- 'leader' (the periodic workers) and 'mailbox:<name>' (its watcher): held by one
    -- node until expires_at, Unix seconds by the database's clock.
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL,
        acquired_at REAL NOT NULL
    );
    """,
    # 9: the report's period (tickets created in [since, until)) found by index, not by
    # reading every ticket (bench/scale.py: report --since 30d at a million tickets)
    """
    CREATE INDEX tickets_created_at ON tickets(created_at);
    """,
    # 10: reply keys someone else has seen (a mail carrying them went to other people too):
    # they prove nothing any more (core/exposure.py). `token`: the key's identity
    # (replykey.Key), `at`: when it was seen, `expires`: the key's own end, after which
    # the row is swept (workers/key_sweep.py)
    """
    CREATE TABLE exposed_keys (
        token TEXT PRIMARY KEY,
        at REAL NOT NULL,
        expires REAL NOT NULL
    );
    CREATE INDEX exposed_keys_expires ON exposed_keys(expires);
    """,
    # 11: what a retry of quarantined mail needs of where it came from (storage/quarantine.py):
    # the SMTP envelope of pushed mail, which classified it (MAIL FROM:<> is automatic mail)
    # and routed it (RCPT TO of a Bcc). NULL: read from a mailbox, or kept before this version.
    """
    ALTER TABLE quarantine ADD COLUMN envelope_sender TEXT;  -- empty: the null reverse-path
    ALTER TABLE quarantine ADD COLUMN envelope_recipients TEXT;  -- JSON list
    """,
)
