"""Your own environment as a plain Python class: its public methods are the tools the model may
call (type hints and the docstring's Args make each one's schema), the constructor's keyword
arguments are an episode's initial_config, and ``state()`` is what synthesis and evaluation
compare. docs/environments.md walks through it."""

from __future__ import annotations


class Notebook:
    """A notebook of titled notes. Notes can be added, read, listed and deleted."""

    def __init__(self, owner: str = "", notes: dict | None = None):
        self.owner = owner
        self.notes = dict(notes or {})

    def add_note(self, title: str, text: str) -> str:
        """Add a note, or replace the note that has this title.

        Args:
            title: The note's title.
            text: What the note says.
        """
        self.notes[title] = text
        return f"added {title}"

    def read_note(self, title: str) -> str:
        """Read one note.

        Args:
            title: The note's title.
        """
        if title not in self.notes:
            raise KeyError(f"no note titled {title!r}")
        return self.notes[title]

    def list_notes(self) -> list:
        """The titles of all notes, sorted."""
        return sorted(self.notes)

    def delete_note(self, title: str) -> str:
        """Delete a note.

        Args:
            title: The note's title.
        """
        if self.notes.pop(title, None) is None:
            raise KeyError(f"no note titled {title!r}")
        return f"deleted {title}"

    def state(self) -> dict:
        return {"notes": self.notes}
