"""OpenAI's function calling on r1lab serve, for models with a chat template: the `tools` a request offers and
the calls of earlier assistant turns, checked (a bad one is a 400 naming its field) and put in the form Hugging
Face chat templates render (a call's arguments as a dict, where OpenAI sends a JSON string); and the calls a
reply makes, read from what the model wrote (Qwen's `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`)
into OpenAI's `message.tool_calls`.

The server never runs a tool: the client does, and sends each result back as a `tool` message. While tools are
offered a reply ends at its first `</tool_call>` (a stop string): a model trained on r1lab's episodes reads the
result right after its call and would otherwise write a result of its own. So a reply makes at most one call;
the client asks again with the result (a model that wants several calls makes them one reply at a time).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from r1lab.tools.calls import CHAT, parse_call

CALL_END = CHAT[1]
_CALL = re.compile(f"{re.escape(CHAT[0])}((?:(?!{re.escape(CHAT[0])}).)*?){re.escape(CHAT[1])}", re.S)  # from the last opening


class FunctionSpec(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")  # OpenAI's `strict` flag is accepted and ignored

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for a function's name
    description: str | None = None
    parameters: dict | None = None  # a JSON Schema of the arguments object


class ToolSpec(BaseModel):
    """One entry of a request's `tools`: {"type": "function", "function": {"name", "description", "parameters"}}."""

    model_config = ConfigDict(strict=True, extra="ignore")

    type: Literal["function"]
    function: FunctionSpec

    def schema(self) -> dict:
        """What the chat template's `tools=` gets (transformers' get_json_schema writes the same shape)."""
        return {"type": "function", "function": self.function.model_dump(exclude_none=True)}

    def parameter_names(self) -> list[str]:
        return list((self.function.parameters or {}).get("properties", {}))


class CalledFunction(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    name: str
    arguments: str  # JSON of an object, as OpenAI sends it

    @field_validator("arguments")
    @classmethod
    def _a_json_object(cls, text: str) -> str:
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError("a call's arguments are a JSON string of an object, e.g. '{\"expression\": \"2 * 4\"}'") from None
        if not isinstance(value, dict):
            raise ValueError("a call's arguments are a JSON object")
        return text


class CalledTool(BaseModel):
    """One of an earlier assistant turn's `tool_calls`, sent back by the client with the conversation."""

    model_config = ConfigDict(strict=True, extra="ignore")

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction

    def for_template(self) -> dict:
        """The call as HF chat templates read it: arguments a dict (a template writes them with `tojson`)."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.function.name, "arguments": json.loads(self.function.arguments)}}


def read_calls(text: str, parameters: dict[str, list[str]]) -> tuple[str, list[dict]]:
    """(the text outside the calls, the calls as OpenAI's message.tool_calls) of what a model wrote. `parameters`:
    each offered tool's parameter names. A call that cannot be read (not JSON, a tool not offered) is no call:
    it stays in the text as the model wrote it, for the client to see."""
    calls, kept, end = [], [], 0
    for match in _CALL.finditer(text):
        call = parse_call(match.group(1).strip(), parameters, "chat")
        if call.error is None:
            kept.append(text[end:match.start()])
            end = match.end()
            calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                          "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}})
    return "".join(kept) + text[end:], calls
