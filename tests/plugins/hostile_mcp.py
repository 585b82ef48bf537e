"""An MCP server that misbehaves on request (tests/unit/test_plugin_envs.py): a call that never
returns in time, a process that exits mid-call, a result too large to show, a tool list that
changes mid-episode."""

from __future__ import annotations

import os
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("hostile")


@server.tool()
def add_note(title: str, text: str) -> str:
    """Add a note."""
    return f"added {title}"


@server.tool()
def read_note(title: str) -> str:
    """Read a note."""
    return title


@server.resource("hostile://state")
def state() -> str:
    return '{"calls": "many"}'


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "done"


@server.tool()
def die() -> str:
    """The server process exits mid-call."""
    os._exit(3)


@server.tool()
def huge(chars: int) -> str:
    """A result of this many characters."""
    return "x" * chars


@server.tool()
def drop_tool(name: str) -> str:
    """The server stops offering a tool."""
    server.remove_tool(name)
    return f"dropped {name}"


if __name__ == "__main__":
    server.run()
