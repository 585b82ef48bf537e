"""What several test modules share and is not a fixture: a small BFCL episode and its gold script
(the rollout, training and launch tests), a scripted policy, SFT rows, and the config overrides of
the flow tests that talk to an llm-katan server. Fixtures live in the conftest files."""

from __future__ import annotations

import json

#: a one-folder GorillaFileSystem and the two requests of the episode below
CONFIG = {"GorillaFileSystem": {"root": {"alex": {"type": "directory", "contents": {
    "workspace": {"type": "directory", "contents": {"a.txt": {"type": "file", "content": "hello world"}}}}}}}}
Q1 = "Go into workspace and show me what is there."
Q2 = "Print the text of a.txt for me."


def act(summary: str, answer: str) -> str:
    """One action in the format SFT teaches: a note, a thought, an answer."""
    return f"<summary>{summary}</summary><think>next</think><answer>{answer}</answer>"


#: the gold actions of the episode: two calls and an answer, then one call and an answer
GOLD = [act("Need to enter workspace.", "[cd(folder='workspace')]"), act("In workspace, now list it.", "[ls()]"),
        act("Listed: a.txt. Turn done.", "Here is the listing."), act("In workspace; a.txt exists.", "[cat(file_name='a.txt')]"),
        act("Printed a.txt.", "Done.")]


def bfcl_episode(description: str = ""):
    """Two turns in a real GorillaFileSystem: cd + ls, then cat."""
    from progra_core.calls import Call
    from progra_core.envs.bfcl import function_docs
    from progra_core.train.rollout import Episode

    return Episode("ep1", ["GorillaFileSystem"], json.dumps(CONFIG), json.dumps(function_docs(["GorillaFileSystem"])),
                   description, [{"query": Q1, "steps": [[Call("cd", {"folder": "workspace"})], [Call("ls", {})]]},
                                 {"query": Q2, "steps": [[Call("cat", {"file_name": "a.txt"})]]}])


class Scripted:
    """A generate() that answers from a script and records every context it was given."""

    def __init__(self, tok, script):
        self.tok, self.script, self.contexts, self.outputs = tok, list(script), [], []

    def __call__(self, contexts):
        out = []
        for c in contexts:
            self.contexts.append(self.tok.decode(c))
            ids = self.tok(self.script[len(self.outputs)], add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
            self.outputs.append(ids)
            out.append(ids)
        return out


#: six SFT rows (one validation), awareness and cold start alternating
EXAMPLES = [{"example_id": f"e{i}", "kind": k, "prompt": [{"role": "system", "content": "Use tools."},
                                                         {"role": "user", "content": f"request {i}"}],
             "completion": [{"role": "assistant", "content": f"<answer>[cd(folder='d{i}')]</answer>"}],
             "split": "validation" if i == 0 else "train"} for i, k in enumerate(["awareness", "cold_start"] * 3)]

#: the PAG roles the data-flow tests point at one server
ROLES = ("generator", "verifier", "augmenter")


def flow_overrides(root, api_base: str, model: str, *extra: str) -> list[str]:
    """A small data flow whose PAG roles all ask ``model`` at ``api_base`` (synthesis off: it has its
    own flow tests, so the server sees PAG requests only)."""
    sets = [f"storage.root={root}", "ingest.limit=3", "awareness.generator=llm", "awareness.limit=null", "awareness.shard_size=4",
            "sft_data.cold_start_min=16",
            "verify.shard_size=4", "synthesize.enabled=false"]
    sets += [f"models.{r}={model}" for r in ROLES]
    sets.append("models.api_base=" + json.dumps({r: api_base for r in ROLES}))
    return sets + list(extra)


def one_stage(name: str, input_id: str | None, cfg):
    """The single dataset one data stage produced (``run_stage`` is what ``progra stage`` runs)."""
    from flows.stage_flow import run_stage

    (ref,) = run_stage(cfg, name, input_id).values()
    return ref


def sort_trajectory() -> dict:
    """Two single-call turns in a GorillaFileSystem: cd into workspace, then sort report.txt."""
    from progra_core.calls import calls_to_records, parse_calls
    from progra_core.envs.bfcl import function_docs

    def step(text, obs):
        return {"calls": calls_to_records(parse_calls(text)), "observations": obs}
    return {"trajectory_id": "t", "source": "x", "split": "train", "env": "bfcl", "involved_classes": ["GorillaFileSystem"],
            "tools": json.dumps(function_docs(["GorillaFileSystem"])), "scenario": "fs",
            "turns": [{"query": "Go into the workspace folder.", "actions": [step("[cd(folder='workspace')]", ["ok"])],
                       "reply": None, "tools_added": []},
                      {"query": "Now sort report.txt for me.", "actions": [step("[sort(file_name='report.txt')]", ["a\nb"])],
                       "reply": None, "tools_added": []}]}
