"""An MCP server as an environment, through the official ``mcp`` SDK (stdio or streamable HTTP).

* **Tools** are what the server lists at the start of an episode (``tools/list``): their
  ``input_schema`` is the docs' ``parameters``. A call is a ``tools/call``; its structured
  content (the return value: a string as-is, anything else as JSON) or else its text parts are
  the observation, and a result the server flags as an error is an error observation.
* **An episode** is a fresh server process (``command``, stdio), which gets the row's
  ``initial_config`` as JSON in the ``PROGRA_ENV_CONFIG`` environment variable; or, for a
  server that keeps running (``url``), a call to the server's ``reset_tool`` with
  ``initial_config`` as its arguments (required for ``url``). The reset tool is never shown to
  the model. Every request carries the episode's id in its ``_meta`` (``progra/episode``): a url
  server keeps a state per id, since two episodes (the policy's and the ground truth's twin)
  are open at once.
* **State** is the text of the resource ``state_resource`` names, or the result of the hidden tool
  ``state_tool`` (a server that keeps a state per session: static resources cannot see the
  session), parsed as JSON when it parses; or none: then every turn counts as read-only
  (synthesis asks its reviewers) and success compares observations only.
* **Nothing hangs**: starting, listing and each call have a deadline (``start_timeout_s``, the
  execution budget per call); a server that dies mid-episode, a call to a name the server did not
  list, a tool the server dropped since, a result above the observation limit: each is an error
  observation (a build that fails is an :class:`~progra_core.envs.base.EnvError`, a reject where
  the row came from). The server's stderr goes to a bounded log, never to the run's output.

The SDK is asyncio; an env owns one event loop thread whose single task holds the client session
(the SDK's contexts must be left by the task that entered them), and the calls are handed to it.
Like every env that executes calls, it lives in a killable worker process
(:mod:`progra_core.envs.isolated`), so a stdio server is that worker's child."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import sys
import tempfile
import threading
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from progra_core.calls import Call
from progra_core.envs import budget
from progra_core.envs.base import EnvError, EnvKind, StateTooLarge, json_config
from progra_core.envs.tool_env import ERROR, ToolEnv, ToolFailed

__all__ = ["MCPSpec", "MCPEnv", "mcp_kind", "CONFIG_VARIABLE", "EPISODE_META", "STDERR_BYTES"]

CONFIG_VARIABLE = "PROGRA_ENV_CONFIG"  #: a stdio server's episode config (JSON), in its environment
EPISODE_META = "progra/episode"  #: the ``_meta`` key of every request: the episode it belongs to
STDERR_BYTES = 1 << 20  #: the server's stderr kept per episode (the rest is dropped)


class MCPSpec(BaseModel):
    """An MCP environment in the config: ``envs: {notes: {mcp: {command: [python, notes.py]}}}``."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] | None = Field(None, description=(
        "A stdio server: the command that starts it, one process per episode ('python' is the interpreter progra runs in)."))
    url: str | None = Field(None, description="A streamable-HTTP server that keeps running (needs reset_tool).")
    cwd: str | None = Field(None, description="Working directory of a stdio server.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables of a stdio server.")
    reset_tool: str | None = Field(None, description="A tool called with initial_config at each episode's start; hidden from the model.")
    state_resource: str | None = Field(None, description="URI of a resource whose text is the env's state (none: no state).")
    state_tool: str | None = Field(None, description=(
        "Or a tool (no arguments, hidden from the model) whose result is the state: for servers that keep a state per "
        "session (a url server: episodes are open side by side), since static resources cannot see the session."))
    scenario: str | None = Field(None, description="What the model is told about the env (default: the server's instructions).")
    start_timeout_s: float = Field(30.0, gt=0, description="Starting the server, the handshake and the tool list.")

    @model_validator(mode="after")
    def _one_transport(self) -> MCPSpec:
        if self.command and self.command[0] in ("python", "python3"):  # the interpreter progra runs in (its venv)
            self.command = [sys.executable, *self.command[1:]]
        if self.command and self.cwd is None:  # a script relative to where the config loads: absolute, for
            self.command = [self.command[0], *(os.path.abspath(a) if a.endswith(".py") and os.path.isfile(a) else a
                                                for a in self.command[1:])]  # worker processes started elsewhere
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (a stdio server) or url (a streamable-HTTP server)")
        if self.command is not None and not self.command:
            raise ValueError("command is empty")
        if self.url is not None and not self.reset_tool:
            raise ValueError("a url server keeps running between episodes: name its reset_tool")
        if self.state_resource and self.state_tool:
            raise ValueError("give state_resource or state_tool, not both")
        return self


class _Session:
    """One client session on its own event loop thread; requests are served in order."""

    def __init__(self, spec: MCPSpec, config: Any, name: str):
        self.spec, self.name = spec, name
        self.meta = {EPISODE_META: uuid.uuid4().hex}  # a url server keeps episodes open side by side apart by it
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"mcp-{name}", daemon=True)
        self.thread.start()
        self.dead: str | None = None
        self.stderr = tempfile.TemporaryFile()
        self.queue: asyncio.Queue = asyncio.Queue()  # bound to the loop on first use (3.10+), in the loop's thread
        self.finished = threading.Event()  #: set when the session (and a stdio server) is gone
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self.main = asyncio.run_coroutine_threadsafe(self._main(config, ready), self.loop)
        try:
            self.tools, self.instructions = ready.result(timeout=spec.start_timeout_s)
        except concurrent.futures.TimeoutError:
            self.close(graceful=False)
            raise EnvError(f"MCP env {name!r}: the server did not start and list its tools within {spec.start_timeout_s:g} s") from None
        except EnvError:
            self.close(graceful=False)
            raise
        except BaseException as e:  # noqa: BLE001 - the SDK's failures come as exception groups
            self.close(graceful=False)
            raise EnvError(f"MCP env {name!r}: cannot start the server: {_reason(e)}") from None

    def _transport(self, config: Any):
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        if self.spec.url is not None:
            return self.spec.url
        env = {**self.spec.env, CONFIG_VARIABLE: json.dumps(config if config is not None else {})}
        params = StdioServerParameters(command=self.spec.command[0], args=self.spec.command[1:], env=env, cwd=self.spec.cwd)
        return stdio_client(params, errlog=self.stderr)

    async def _main(self, config: Any, ready: concurrent.futures.Future) -> None:
        from mcp import Client

        try:
            async with Client(self._transport(config)) as client:
                listed = await client.list_tools()
                hidden = {self.spec.reset_tool, self.spec.state_tool}
                tools = [{"name": t.name, "description": t.description or "", "parameters": dict(t.input_schema or {})}
                         for t in listed.tools if t.name not in hidden]
                if self.spec.reset_tool:
                    result = await client.call_tool(self.spec.reset_tool, config if isinstance(config, dict) else {},
                                                    meta=self.meta)
                    if result.is_error:
                        raise EnvError(f"MCP env {self.name!r}: {self.spec.reset_tool}() failed: {_text(result)[:300]}")
                ready.set_result((tools, client.instructions or ""))
                while True:
                    item = await self.queue.get()
                    if item is None:
                        return
                    op, args, seconds, answer = item
                    try:
                        value = await asyncio.wait_for(getattr(client, op)(*args, meta=self.meta), seconds)
                    except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                        if not answer.done():
                            answer.set_exception(e)
                        if isinstance(e, asyncio.CancelledError):
                            raise
                        continue
                    if not answer.done():
                        answer.set_result(value)
        except BaseException as e:  # noqa: BLE001 - the server is gone: say why to whoever waits
            self.dead = f"the MCP server stopped: {_reason(e)}"
            if not ready.done():
                ready.set_exception(e)
        finally:
            self.dead = self.dead or "the MCP session is closed"
            self.finished.set()
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is not None and not item[3].done():
                    item[3].set_exception(EnvError(self.dead))

    def ask(self, op: str, args: tuple, seconds: float) -> Any:
        """``client.<op>(*args)`` within ``seconds``; an :class:`EnvError` saying why not."""
        if self.dead:
            raise EnvError(self.dead)
        answer: concurrent.futures.Future = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (op, args, seconds, answer))
        try:
            return answer.result(timeout=seconds + 1.0)
        except (TimeoutError, concurrent.futures.TimeoutError):
            raise EnvError(f"{budget.MARK}the MCP call ran past its {seconds:g} s budget") from None
        except EnvError:
            raise
        except BaseException as e:  # noqa: BLE001
            if self.main.done():
                raise EnvError(self.dead or f"the MCP server stopped: {_reason(e)}") from None
            raise EnvError(f"the MCP call failed: {_reason(e)}") from None

    def log(self) -> str:
        """The end of the server's stderr (what a failed start or a dead server said)."""
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - 2000))
            return self.stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def close(self, graceful: bool = True) -> None:
        _close(self.loop, self.thread, self.main, self.queue, self.finished, self.stderr, graceful)


def _close(loop, thread, main, queue, finished, stderr, graceful: bool = True) -> None:
    """Leave the session (which stops a stdio server), then the loop; bounded, never raises.
    ``graceful``: ask the session task to end (a served session); else cancel it (a start that
    failed or hangs in the handshake)."""
    try:
        if not main.done():
            if graceful:
                loop.call_soon_threadsafe(queue.put_nowait, None)
                finished.wait(5.0)
            if not finished.is_set():
                main.cancel()
                finished.wait(5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5.0)
        if not thread.is_alive():
            loop.close()
        stderr.close()
    except Exception:  # noqa: BLE001 - closing is best effort (interpreter shutdown)
        pass


def _reason(e: BaseException) -> str:
    """The first real error inside the SDK's exception groups, in one line."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {str(e)[:300]}"


def _text(result: Any) -> str:
    """A tool result as the model reads it: its text parts joined (other parts named by type)."""
    parts = []
    for c in getattr(result, "content", None) or []:
        text = getattr(c, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(c, 'type', 'content')}]")
    return "\n".join(parts)


class MCPEnv(ToolEnv):
    """One episode: a session with a fresh (or freshly reset) MCP server."""

    def __init__(self, name: str, spec: MCPSpec, initial_config: Any = None):
        config = json_config(initial_config, f"{name} initial_config")
        if config is not None and not isinstance(config, dict):
            raise EnvError(f"{name}: initial_config must be a JSON object")
        self.session = _Session(spec, config, name)
        super().__init__(name, spec.scenario if spec.scenario is not None else self.session.instructions)
        self.spec = spec
        self._finalizer = weakref.finalize(self, _close, self.session.loop, self.session.thread, self.session.main,
                                           self.session.queue, self.session.finished, self.session.stderr)

    def tools(self) -> list[dict]:
        return self.session.tools

    def _invoke(self, call: Call, seconds: float) -> Any:
        try:
            result = self.session.ask("call_tool", (call.name, dict(call.args)), seconds)
        except EnvError as e:
            raise ToolFailed(str(e)) from None
        if result.is_error:
            raise ToolFailed(_text(result) or "the tool reported an error")
        structured = getattr(result, "structured_content", None)
        if structured is not None:  # the tool's return value itself (the SDK wraps a non-object as {"result": ...})
            return structured["result"] if set(structured) == {"result"} else structured
        return _text(result)

    def snapshot(self) -> dict[str, Any]:
        if not (self.spec.state_resource or self.spec.state_tool):
            return {}
        try:
            if self.spec.state_tool:
                result = self.session.ask("call_tool", (self.spec.state_tool, {}), budget.STATE_SECONDS)
                if result.is_error:
                    raise EnvError(_text(result)[:300])
                text = _text(result)
            else:
                result = self.session.ask("read_resource", (self.spec.state_resource,), budget.STATE_SECONDS)
                text = "\n".join(getattr(c, "text", "") or "" for c in result.contents)
        except EnvError as e:
            raise StateTooLarge(f"{self.name}: the state cannot be read: {e}") from None
        if len(text) > budget.MAX_OBSERVATION_CHARS:
            raise StateTooLarge(f"{self.name}: the state is {len(text)} characters, above {budget.MAX_OBSERVATION_CHARS}")
        try:
            return {"state": json.loads(text)}
        except json.JSONDecodeError:
            return {"state": text}

    def close(self) -> None:
        self._finalizer()


def mcp_kind(name: str, raw: Any) -> EnvKind:
    """The env kind of an MCP server named in the config (the spec is checked now)."""
    try:
        spec = MCPSpec.model_validate(raw)
    except ValidationError as e:
        raise EnvError(f"envs.{name}.mcp: {e.errors()[0]['msg']} ({'.'.join(map(str, e.errors()[0]['loc'])) or 'spec'})") from None
    docs: list[list[dict]] = []

    def build(classes: Sequence[str], config: Any, long_context: bool) -> MCPEnv:
        return MCPEnv(name, spec, config)

    def tool_docs(classes: Sequence[str]) -> list[dict]:
        """The tools of one episode started without a config (listed once per process)."""
        if not docs:
            env = MCPEnv(name, spec, None)
            try:
                docs.append(env.tools())
            finally:
                env.close()
        return [dict(t) for t in docs[0]]

    where = spec.url or " ".join(spec.command or [])
    return EnvKind(name, f"the MCP server {where[:120]}; initial_config = the episode's config (JSON object, may be null); "
                         "involved_classes is not used", build, error_prefix=ERROR, docs=tool_docs, needs_classes=False,
                   sources=tuple(os.path.join(spec.cwd or "", a) for a in (spec.command or [])[1:] if a.endswith(".py")))
