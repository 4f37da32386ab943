"""How an exported model is prompted outside r1lab: the chat template written into the GGUF file (Jinja, which
llama.cpp and llama-cpp-python render) and the ollama Modelfile beside it (a Go template, ollama's own).

Both write r1lab's r1-zero format exactly as `data/format.py: conversation_prompt` does, so a model trained on
"{system} User: {question}. Assistant: <think>" is asked the same way by every runtime, and both end the prompt
with "<think>": the model starts thinking, as it did in training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from r1lab.data.format import END_THINK, R1_ZERO_SYSTEM, THINK

# The paper evaluates with temperature 0.6 and top-p 0.95 (r1lab eval's sampling too).
TEMPERATURE, TOP_P = 0.6, 0.95


@dataclass
class Prompting:
    """What the exporter writes about prompting: the Jinja template, the system text, the stop token."""

    chat_template: str
    template: str  # "r1-zero" or "chat" (the tokenizer's own template)
    system: str | None
    stop: str | None


def r1_zero_jinja(system: str | None) -> str:
    """conversation_prompt's r1-zero format as a Jinja chat template. Earlier answers go back without their
    reasoning (the text after </think>); a system message wins over the model's own system text."""
    default = json.dumps(R1_ZERO_SYSTEM if system is None else system)
    return (
        "{%- set ns = namespace(text=" + default + ") -%}"
        "{%- for m in messages if m['role'] == 'system' -%}{%- set ns.text = m['content'] -%}{%- endfor -%}"
        "{%- set ns.sep = ' ' if ns.text else '' -%}"
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'user' -%}{%- set ns.text = ns.text + ns.sep + 'User: ' + m['content'] + '.' -%}"
        "{%- elif m['role'] == 'assistant' -%}"
        "{%- set ns.text = ns.text + ns.sep + 'Assistant: ' + m['content'].split('" + END_THINK + "')[-1].strip() -%}"
        "{%- endif -%}"
        "{%- if m['role'] != 'system' -%}{%- set ns.sep = ' ' -%}{%- endif -%}"
        "{%- endfor -%}"
        "{{- ns.text -}}"
        "{%- if add_generation_prompt -%}{{- ns.sep + 'Assistant: " + THINK + "' -}}{%- endif -%}"
    )


def r1_zero_go_template() -> str:
    """The same format as ollama's Go template; ollama fills .System from the Modelfile's SYSTEM or the request.

    The `.Thinking` branch makes ollama treat the model as a thinking model, as its deepseek-r1 template does: ollama
    reads the tags around `{{ .Thinking }}` inside the range over .Messages (its thinking.InferTags), and since the
    prompt ends with the opening tag, its parser starts inside the thinking and returns it apart from the answer.
    The branch writes only a last assistant message's own thinking (a reply being continued); earlier turns go
    back as their answer, as conversation_prompt writes them."""
    return (
        '{{- $sep := "" }}{{- if .System }}{{ .System }}{{ $sep = " " }}{{ end }}'
        '{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}'
        '{{- if eq .Role "user" }}{{ $sep }}User: {{ .Content }}.{{ $sep = " " }}'
        '{{- else if eq .Role "assistant" }}{{ $sep }}Assistant: '
        '{{- if and $last .Thinking }} ' + THINK + '{{ .Thinking }}' + END_THINK + '{{ end }} {{ .Content }}{{ $sep = " " }}{{ end }}'
        '{{- end }}{{ $sep }}Assistant: ' + THINK
    )


def modelfile(gguf_name: str, prompting: Prompting, context_length: int) -> str:
    """An ollama Modelfile for the GGUF file `gguf_name` (beside it): template, stop token, the paper's sampling."""
    lines = ["# Written by r1lab export. ollama create NAME -f Modelfile; ollama run NAME", f"FROM ./{gguf_name}"]
    if prompting.template == "r1-zero":
        lines.append(f'TEMPLATE """{r1_zero_go_template()}"""')
        system = R1_ZERO_SYSTEM if prompting.system is None else prompting.system
        if system:
            lines.append(f'SYSTEM """{system}"""')
    # a "chat" model: ollama reads the GGUF's own chat template (tokenizer.chat_template) and maps it when it can
    if prompting.stop:
        lines.append(f'PARAMETER stop "{prompting.stop}"')
    lines += [f"PARAMETER temperature {TEMPERATURE}", f"PARAMETER top_p {TOP_P}", f"PARAMETER num_ctx {context_length}"]
    return "\n".join(lines) + "\n"
