"""Tool calls read from what a model wrote, in the two formats r1lab speaks:

    plain (the tiny world):  <tool>calculator(2 * 4 + 24)</tool>       -> <result>32</result>
                             <tool>add({"a": 2, "b": 3})</tool>        (a tool of several parameters: a JSON object)
    chat (Qwen's template):  <tool_call>{"name": "calculator", "arguments": {"expression": "2 * 4"}}</tool_call>

A call that cannot be read is not an exception: `parse_call` returns a `ToolCall` with `error` set, which the
tool box answers with that error for the model to read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

PLAIN = ("<tool>", "</tool>", "<result>", "</result>")  # call open/close, result open/close
CHAT = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
_PLAIN_CALL = re.compile(r"\s*([A-Za-z_]\w*)\((.*)\)\s*", re.S)


@dataclass
class ToolCall:
    name: str
    arguments: dict = field(default_factory=dict)
    error: str | None = None  # why the call could not be read (then it is not run)


def parse_call(text: str, parameters: dict[str, list[str]], style: str = "plain") -> ToolCall:
    """The call written between a format's markers (`text` is what lies between them). `parameters`: each
    tool's parameter names, in order, so `calculator(2 * 4)` binds its one parameter."""
    if style == "chat":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            return ToolCall("", error=f"the call is not JSON ({err.msg})")
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return ToolCall("", error='a call is {"name": ..., "arguments": {...}}')
        name, arguments = data["name"], data.get("arguments", {})
    else:
        match = _PLAIN_CALL.fullmatch(text)
        if match is None:
            return ToolCall("", error="a call is name(arguments), e.g. calculator(2 * 4)")
        name, inner = match.group(1), match.group(2).strip()
        names = parameters.get(name)
        if names is None:
            return ToolCall(name, error=f"no tool named {name!r}; tools: {', '.join(parameters) or 'none'}")
        if len(names) == 1 and not inner.startswith("{"):
            arguments = {names[0]: inner}
        else:
            try:
                arguments = json.loads(inner) if inner else {}
            except json.JSONDecodeError:
                return ToolCall(name, error=f"{name} takes {', '.join(names)}: write {name}({{\"{names[0]}\": ...}})")
    if name not in parameters:
        return ToolCall(name, error=f"no tool named {name!r}; tools: {', '.join(parameters) or 'none'}")
    if not isinstance(arguments, dict):
        return ToolCall(name, error="the arguments are a JSON object")
    return ToolCall(name, arguments)
