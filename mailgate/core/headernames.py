"""The headers parse.py keeps beside the body, by what reads them; a module of its own,
outside core.mime, so that the directory (which checks rule headers against them) imports
neither the parser nor the email-package replacements core.mime installs."""

# Headers kept decoded in Inbound.headers, where routing rules can match them.
LOOP_HEADERS = (
    "auto-submitted", "precedence", "list-id", "list-unsubscribe", "list-post",
    "x-autoreply", "x-autorespond", "x-auto-response-suppress", "x-failed-recipients",
    "return-path", "x-mailgate-instance", "x-loop", "feedback-type", "from",
)
# Headers that tell automatic and list mail, kept raw in Inbound.raw_headers for
# classify.py, which reads them by their grammar.
AUTOMATIC_HEADERS = (
    "auto-submitted", "precedence", "list-id", "list-unsubscribe", "list-unsubscribe-post",
    "list-post", "list-help", "list-subscribe", "list-owner", "list-archive", "mailing-list",
    "x-mailman-version", "x-mailing-list", "x-ml-name", "x-loop", "sender", "return-path",
    "x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-response-suppress",
    "x-ms-exchange-inbox-rules-loop", "x-ms-exchange-generated-message-source",
    "feedback-id", "x-failed-recipients", "x-mailgate-instance", "feedback-type",
)
# Headers routing rules may match on ([[rule]] header = {...}); kept beside the loop ones.
ROUTING_HEADERS = ("x-priority", "importance", "priority", "x-msmail-priority", "sensitivity",
                   "keywords")
# Fields that pin a mail to what it does, for trust.py: a DKIM pass vouches for a mail's
# tickets and commands only when its signature covers every instance of each of these
# (RFC 6376 5.4). parse.py counts them as the MTA in front of the DKIM verifier reads the
# header block. The tickets: Subject (its [IT-1042] tags), In-Reply-To and References
# (tickets/conversation.py), and Message-ID (which makes a second copy a duplicate). The
# commands: From (whose they are), and the Content- fields that decide which text of the
# signed body is read as the mail's text.
PINNING_FIELDS = ("subject", "in-reply-to", "references", "message-id", "from",
                  "content-type", "content-transfer-encoding", "content-disposition")
