"""The notebook of notebook.py as an MCP server, written with the official SDK: progra starts one
process per episode over stdio and hands it the episode's config in ``PROGRA_ENV_CONFIG``; with
``--http PORT`` it keeps running (streamable HTTP) and a ``reset`` tool starts each episode. State
is kept per episode, by the id progra sends in every request's ``_meta`` (two episodes, the
policy's and the ground truth's twin, are open at once), and read by the ``state`` tool, which
progra hides from the model (``state_tool``), so a turn that changes it is verified without
reviewers."""

from __future__ import annotations

import json
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError  # an error the model is shown, word for word

server = MCPServer("notebook", instructions="A notebook of titled notes. Notes can be added, read, listed and deleted.")
START = dict((json.loads(os.environ.get("PROGRA_ENV_CONFIG") or "{}") or {}).get("notes") or {})
BOOKS: dict[str | None, dict[str, str]] = {}  # one notebook per episode


def episode(ctx: Context) -> str | None:
    """The episode a request belongs to: progra sends its id in every request's _meta."""
    return (ctx.request_context.meta or {}).get("progra/episode")


def notes(ctx: Context) -> dict[str, str]:
    return BOOKS.setdefault(episode(ctx), dict(START))


@server.tool()
def add_note(title: str, text: str, ctx: Context) -> str:
    """Add a note, or replace the note that has this title."""
    notes(ctx)[title] = text
    return f"added {title}"


@server.tool()
def read_note(title: str, ctx: Context) -> str:
    """Read one note."""
    if title not in notes(ctx):
        raise ToolError(f"no note titled {title!r}")
    return notes(ctx)[title]


@server.tool()
def list_notes(ctx: Context) -> list[str]:
    """The titles of all notes, sorted."""
    return sorted(notes(ctx))


@server.tool()
def delete_note(title: str, ctx: Context) -> str:
    """Delete a note."""
    if notes(ctx).pop(title, None) is None:
        raise ToolError(f"no note titled {title!r}")
    return f"deleted {title}"


@server.tool()
def state(ctx: Context) -> str:
    """This session's notebook as JSON (progra's state_tool: hidden from the model)."""
    return json.dumps({"notes": notes(ctx)}, sort_keys=True)


if "--http" in sys.argv:
    @server.tool()
    def reset(ctx: Context, owner: str = "", notes: dict | None = None) -> str:
        """Start an episode in this session: the notebook as the config says."""
        BOOKS[episode(ctx)] = dict(notes or {})
        return "ok"


if __name__ == "__main__":
    if "--http" in sys.argv:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[sys.argv.index("--http") + 1]))
    else:
        server.run()
