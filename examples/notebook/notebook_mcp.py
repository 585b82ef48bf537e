"""The notebook of notebook.py as an MCP server, written with the official SDK: progra starts one
process per episode over stdio and hands it the episode's config in ``PROGRA_ENV_CONFIG``; with
``--http PORT`` it keeps running (streamable HTTP) and a ``reset`` tool starts each episode. The
state is a resource, so a turn that changes it is verified without reviewers."""

from __future__ import annotations

import json
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError  # an error the model is shown, word for word

server = MCPServer("notebook", instructions="A notebook of titled notes. Notes can be added, read, listed and deleted.")
NOTES: dict[str, str] = dict((json.loads(os.environ.get("PROGRA_ENV_CONFIG") or "{}") or {}).get("notes") or {})


@server.tool()
def add_note(title: str, text: str) -> str:
    """Add a note, or replace the note that has this title."""
    NOTES[title] = text
    return f"added {title}"


@server.tool()
def read_note(title: str) -> str:
    """Read one note."""
    if title not in NOTES:
        raise ToolError(f"no note titled {title!r}")
    return NOTES[title]


@server.tool()
def list_notes() -> list[str]:
    """The titles of all notes, sorted."""
    return sorted(NOTES)


@server.tool()
def delete_note(title: str) -> str:
    """Delete a note."""
    if NOTES.pop(title, None) is None:
        raise ToolError(f"no note titled {title!r}")
    return f"deleted {title}"


@server.resource("notebook://state")
def state() -> str:
    return json.dumps({"notes": NOTES}, sort_keys=True)


if "--http" in sys.argv:
    @server.tool()
    def reset(owner: str = "", notes: dict | None = None) -> str:
        """Start an episode: the notebook as the config says."""
        NOTES.clear()
        NOTES.update(notes or {})
        return "ok"

if __name__ == "__main__":
    if "--http" in sys.argv:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[sys.argv.index("--http") + 1]))
    else:
        server.run()
