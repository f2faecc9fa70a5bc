"""The configuration running components read: one immutable snapshot, replaced whole.

Configuration reaches every running part one way: each is given the daemon's `Current` and
reads `current.snapshot` once at the start of a round (a worker's tick, an intake
transaction, an SMTP command) and uses that one snapshot to the round's end. Nothing copies
a setting when it is built, and nothing is changed in place: a reload that passes its
checks builds a new Snapshot and assigns it while no transaction is open, so a round never
mixes two configurations and the next round sees the new one. A reload that fails leaves
the old snapshot where it was.

What a reload cannot swap this way stays as before: a changed state dir (database, sent log)
is refused (daemon.needs_restart); a mailbox's own settings restart its watcher; the
listener, metrics endpoint and SMTP transport are rebuilt when theirs change.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.config.directory import Directory
from mailgate.config.settings import Config
from mailgate.core.render import Renderer
from mailgate.core.replykey import KeyRing
from mailgate.intake.pipeline import Clock, Pipeline, PipelineSettings
from mailgate.service import keyfile
from mailgate.storage.slaclock import SlaBook


@dataclass(frozen=True)
class Snapshot:
    """A loaded configuration and what is derived from it; never changed once built.

    The pipeline holds the directory, templates and reply-key ring it was built with: the
    properties read them there, so no part can disagree with another."""

    config: Config
    pipeline: Pipeline  # built from config, directory, templates and keys; one message

    @classmethod
    def build(cls, config: Config, directory: Directory, renderer: Renderer,
              clock: Clock) -> Snapshot:
        """The snapshot of a checked setup (`renderer`: the templates load_setup checked).
        The reply-key ring is read again for each one: `mailgate keys rotate`, then a
        reload, and new mail is signed with the new secret."""
        keys = keyfile.ring_for(config, clock())
        settings = PipelineSettings.from_config(config, keys)
        return cls(config, Pipeline(directory, renderer, settings, clock))

    @property
    def directory(self) -> Directory:
        return self.pipeline.directory

    @property
    def renderer(self) -> Renderer:
        return self.pipeline.renderer

    @property
    def keys(self) -> KeyRing:
        return self.pipeline.settings.keys

    @property
    def sla(self) -> SlaBook:
        return self.pipeline.sla


class Current:
    """Where the running snapshot is: `snapshot` is replaced as a whole, never edited."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
