"""A batch of the pipelined IMAP pass between its match and its commit (imap_source._process), and its
parts when its bodies weigh more than one FETCH may ask for."""

from __future__ import annotations

from dataclasses import dataclass, field

from hanna_sync.remote import imap_wire
from hanna_sync.scan.source import Candidate


@dataclass
class Matched:
    """A batch matched on its header fields, its bodies asked for, not committed yet."""

    uids: list[int]
    fetched: dict[int, imap_wire.HeaderFields]  # of the batch's UIDs, those the server returned
    tokens: dict[int, list[str]]
    answers: dict[int, list[str]]  # the ids each letter answers (its thread)
    candidates: list[Candidate[int]]
    skipped: list[int]
    published: set[str]  # Message-IDs and conversations of its matched letters: what replies inherit from
    wanted: list[Candidate[int]] = field(default_factory=list)  # matched, not archived yet: to download
    held: int = 0  # bytes of the pass's BodyBudget its bodies hold
    bodies: list[imap_wire.Pending] = field(default_factory=list)

    def parts(self, weight: dict[int, int], most: int) -> list[Matched]:
        """The batch as consecutive runs of its UIDs whose downloads (`weight`) stay within `most` bytes
        (a heavier letter alone), each committed like a batch of its own: no FETCH asks for more."""
        runs: list[list[int]] = [[]]
        for uid in self.uids:
            if runs[-1] and sum(weight.get(u, 0) for u in runs[-1]) + weight.get(uid, 0) > most:
                runs.append([])
            runs[-1].append(uid)
        out = []
        for run in runs:  # each with the whole batch's `published`: a reply waits for all of its parts
            uids = set(run)
            out.append(Matched(run, {u: f for u, f in self.fetched.items() if u in uids}, self.tokens, self.answers,
                                [c for c in self.candidates if c.key in uids], [u for u in self.skipped if u in uids],
                                self.published, [c for c in self.wanted if c.key in uids],
                                sum(weight.get(u, 0) for u in run)))
        return out


def message_id(identity: str | None) -> list[str]:
    """The Message-ID in a letter's identity ("mid:<id>"), as replies name it."""
    return [identity[4:]] if identity and identity.startswith("mid:") else []


def conversation_key(conversation_id: str | None) -> list[str]:
    """How a conversation id is named among Message-IDs in thread look-ups (letter_thread_ids)."""
    return [f"conversation:{conversation_id}"] if conversation_id else []
