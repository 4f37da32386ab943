"""Tools (r1lab/tools/): the shipped calculator evaluates arithmetic and nothing else; calls are read from both
formats, a malformed one becoming an error result; a tool that raises, hangs or returns a megabyte is contained;
a TRL-style environment's public methods are its tools."""

from __future__ import annotations

import time

import pytest
import torch

from r1lab.tools import calculator
from r1lab.tools.box import Tool, ToolBox, environment_tools, load_tools
from r1lab.tools.calculator import CalculatorError
from r1lab.tools.calls import parse_call


@pytest.mark.parametrize("expression, value", [("7 * 6 + 23", "65"), ("72 - (7 * 7 + 23)", "0"), ("-3 ** 2", "-9"),
                                               ("7 / 2", "3.5"), ("8 / 2", "4"), ("17 // 5 % 2", "1"), ("2 ** 64", str(2**64))])
def test_the_calculator_computes(expression, value):
    assert calculator(expression) == value


@pytest.mark.parametrize("expression, says", [
    ("__import__('os').system('true')", "not call"), ("x + 1", "not name"), ("(1).real", "not attribute"),
    ("9 ** 9 ** 9", "exponent"), ("10 ** 40", "too large"), ("1 / 0", "division by zero"), ("2 +", "not an arithmetic"),
    ("1" * 300, "longer than"), ("'a' * 3", "not constant"), ("(-8) ** 0.5", "no real result")])
def test_the_calculator_refuses_everything_but_arithmetic(expression, says):
    with pytest.raises(CalculatorError, match=says):
        calculator(expression)


def add(a: int, b: int) -> int:
    """Adds two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


def test_calls_are_read_in_both_formats_and_bad_ones_become_errors():
    box = ToolBox([Tool.of(calculator), Tool.of(add)])
    assert box.run(parse_call("calculator(2 * 4 + 24)", box.parameters)) == "32"
    assert box.run(parse_call('add({"a": 2, "b": 3})', box.parameters)) == "5"
    chat = '{"name": "calculator", "arguments": {"expression": "6 * 7"}}'
    assert box.run(parse_call(chat, box.parameters, style="chat")) == "42"
    assert box.run(parse_call("calculator 2 * 4", box.parameters)) == "error: a call is name(arguments), e.g. calculator(2 * 4)"
    assert box.run(parse_call("search(zor)", box.parameters)).startswith("error: no tool named 'search'")
    assert box.run(parse_call("{not json", box.parameters, style="chat")).startswith("error: the call is not JSON")
    assert box.run(parse_call("calculator(1 / 0)", box.parameters)) == "error: calculator: division by zero"
    assert box.run(parse_call('add({"a": 2})', box.parameters)).startswith("error: add: ")  # a missing argument


def test_a_tool_that_raises_hangs_or_floods_is_contained():
    def broken(query: str) -> str:
        """Fails.

        Args:
            query: anything.
        """
        raise RuntimeError("the index is gone")

    def slow(query: str) -> str:
        """Hangs.

        Args:
            query: anything.
        """
        time.sleep(30)
        return "late"

    def flood(query: str) -> str:
        """Returns a megabyte.

        Args:
            query: anything.
        """
        return "x" * 2**20

    box = ToolBox([Tool.of(broken), Tool.of(slow), Tool.of(flood)], time_limit_s=0.5, max_result_chars=100)
    t0 = time.time()
    results = box.run_many([parse_call(f"{name}(q)", box.parameters) for name in ("broken", "slow", "flood", "slow")])
    assert time.time() - t0 < 2  # the two hung calls waited together, not one after the other
    assert results[0] == "error: broken: the index is gone"
    assert results[1] == results[3] == "error: slow took longer than 0.5 s"
    assert results[2].startswith("x" * 100 + " ... [cut at 100 characters]") and len(results[2]) < 200


class Library:
    """A TRL environment_factory-style environment: reset(**row), public methods as tools, reward()."""

    def reset(self, **row) -> str | None:
        self.facts, self.asked = row["facts"], []
        return None

    def search(self, query: str) -> str:
        """Finds the facts that mention a name.

        Args:
            query: the name to look up.
        """
        self.asked.append(query)
        return "; ".join(f for f in self.facts if query.lower() in f.lower()) or "nothing found"

    def reward(self) -> float:
        return float(bool(self.asked))


def test_an_environment_class_runs_unchanged():
    env = Library()
    env.reset(facts=["the river Zor is 37 km long", "the river Pel is 12 km long"])
    tools = environment_tools(env)
    assert [t.name for t in tools] == ["search"] and tools[0].schema["function"]["parameters"]["required"] == ["query"]
    box = ToolBox(tools)
    assert box.run(parse_call("search(Zor)", box.parameters)) == "the river Zor is 37 km long"
    assert env.reward() == 1.0


def test_tools_are_named_by_import_path_and_checked():
    (tool,) = load_tools(["r1lab.tools:calculator"])
    assert tool.name == "calculator" and tool.parameters == ["expression"]
    with pytest.raises(ValueError, match="tool 'r1lab.tools:calculater': module r1lab.tools has no attribute"):
        load_tools(["r1lab.tools:calculater"])

    def undocumented(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="tool 'undocumented': .*docstring"):
        Tool.of(undocumented)


def test_tools_are_checked_when_the_config_loads():
    from r1lab.config import ConfigError
    from r1lab.recipes.load import load_config

    cfg = load_config("r1-zero", ["rl.tools=[r1lab.tools:calculator]", "rollout.max_turns=2"])
    assert cfg.rl.tools == ["r1lab.tools:calculator"] and cfg.rollout.options() == {}  # max_turns is not the engine's
    with pytest.raises(ConfigError, match=r"rl.tools: tool 'r1lab.tools:calculater': module r1lab.tools has no attribute"):
        load_config("r1-zero", ["rl.tools=[r1lab.tools:calculater]"])
    with pytest.raises(ConfigError, match="rl.algorithm: ppo's GAE"):
        load_config("r1-zero", ["rl.tools=[r1lab.tools:calculator]", "rl.algorithm=ppo"])


def test_lookup_questions_need_facts_no_corpus_holds():
    from r1lab.config import PretrainConfig
    from r1lab.tinyworld.build import corpus
    from r1lab.tinyworld.lookup import RIVERS, search
    from r1lab.tinyworld.problems import TinyWorldTask, score

    task = TinyWorldTask("tinyworld/lookup", train_size=400, test_size=100)
    for ex in task.examples("test") + task.examples("train"):
        lengths = [RIVERS[r] for r in ex.meta["rivers"]]
        assert int(ex.answer) == lengths[0] - (lengths[1] if len(lengths) == 2 else ex.meta["km"]) > 0
        assert score(ex.answer, ex) == 1.0 and score(str(int(ex.answer) + 1), ex) == 0.0
        found = search(" ".join(ex.meta["rivers"]))
        assert all(f"{r}: {RIVERS[r]} km" in found for r in ex.meta["rivers"])
    assert search("the Amazon") == "no entry for 'the Amazon'"
    docs = corpus(PretrainConfig(corpus_docs=3000), TinyWorldTask("tinyworld", train_size=3000, test_size=10))
    words = {w.strip(".,?!:") for d in docs for w in d.split()}
    assert not words & {"km", "river"}  # pretraining never saw a river


def test_sft_never_learns_to_write_a_tool_result(tiny):
    from r1lab.sft.data import IGNORE, tokenize_example

    _, tokenizer = tiny
    example = {"prompt": "Solve 7 * x + 23 = 72", "completion": "x is about 6. check <result>65</result> 72 - 65 = 7"}
    row = tokenize_example(tokenizer, example, 256)
    result = [i for text in ("<result>", "65", "</result>") for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    ids, labels = row["input_ids"], row["labels"]
    start = next(i for i in range(len(ids)) if ids[i:i + len(result)] == result)
    assert labels[start:start + len(result)] == [IGNORE] * len(result)  # read, not learned
    assert labels[start + len(result):] == ids[start + len(result):] and labels[start - 1] == ids[start - 1]
    plain = tokenize_example(tokenizer, {"prompt": "p", "completion": "no tools here"}, 256)
    assert plain["labels"][-len(tokenizer("no tools here", add_special_tokens=False)["input_ids"]) - 1:] == plain["input_ids"][
        -len(tokenizer("no tools here", add_special_tokens=False)["input_ids"]) - 1:]


def test_the_world_writes_tool_traces_whose_results_are_the_tools_own():
    import random

    from r1lab.tinyworld.problems import TinyWorldTask
    from r1lab.tinyworld.tool_traces import trace
    from r1lab.tools.calls import parse_call

    box = ToolBox(load_tools(["r1lab.tools:calculator", "r1lab.tinyworld.lookup:search"]))
    rng = random.Random(0)
    examples = TinyWorldTask("tinyworld/arithmetic+lookup", train_size=200, test_size=10).examples("train")
    calls = 0
    for ex in examples:
        if ex.meta["kind"] == "arithmetic":
            thinking, answer = trace(rng, ex, tool_share=1.0)
            assert answer == ex.answer and thinking.endswith("<result>0</result> ok.")
        else:
            thinking, answer = trace(rng, ex, tool_share=0.5)
        for chunk in thinking.split("<tool>")[1:]:  # every result written is what the tool returns
            written, _, rest = chunk.partition("</tool><result>")
            assert box.run(parse_call(written, box.parameters)) == rest.partition("</result>")[0]
            calls += 1
        if ex.meta["kind"] == "lookup" and "<tool>" in thinking:
            assert answer == ex.answer
    assert calls > len(examples)


def test_tool_tokens_are_added_as_single_ids_without_moving_old_outputs(tiny_model_dir):
    from r1lab.models.io import load_model
    from r1lab.models.vocab import add_tokens
    from r1lab.tools.calls import PLAIN

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    ids = tokenizer("Solve 7 * x + 23 = 72", return_tensors="pt")["input_ids"]
    before = model(ids).logits[0, -1]
    assert add_tokens(model, tokenizer, list(PLAIN), seed=0) == list(PLAIN)
    assert add_tokens(model, tokenizer, list(PLAIN), seed=0) == []  # a second time adds nothing
    text = "<tool>calculator(6 * 7)</tool><result>42</result>"
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert all(t in pieces for t in PLAIN) and tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    after = model(ids).logits[0, -1]
    assert after.shape[0] == before.shape[0] + 4
    torch.testing.assert_close(after[: before.shape[0]], before)  # old text, old outputs


def test_new_token_rows_follow_the_seed_and_leave_the_global_generator_alone(tiny_model_dir):
    """Unseeded, each process drew its own rows: a run was not its own rerun, and a resumed run's SFT stage was
    another draw than the uninterrupted run's (the tool kill test caught it)."""
    from r1lab.models.io import load_model
    from r1lab.models.vocab import add_tokens
    from r1lab.tools.calls import PLAIN

    def new_rows(seed):
        model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
        add_tokens(model, tokenizer, list(PLAIN), seed=seed)
        return model.get_input_embeddings().weight[-len(PLAIN):].detach().clone()

    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = new_rows(0)
    assert torch.equal(torch.get_rng_state(), state)  # the run's own draws are not moved
    torch.manual_seed(2)  # another global state: the same rows
    assert torch.equal(new_rows(0), first) and not torch.equal(new_rows(1), first)


def test_check_lines_are_judged_with_and_without_the_calculator():
    from r1lab.tinyworld.census import checks_right
    from r1lab.tinyworld.problems import TinyWorldTask

    ex = next(e for e in TinyWorldTask("tinyworld/arithmetic", train_size=200, test_size=10).examples("train")
              if e.meta["parts"][1] == "+")
    a, op, b, c, x = ex.meta["parts"]
    value = a * (x - 1) + b
    head = f"x is about {x - 1}. check {a} * {x - 1} = {a * (x - 1)}, {a * (x - 1)} + {b} = {value}, {c} - {value} = {c - value}, too small."
    tool = f"x is about {x - 1}. check <tool>calculator({c} - ({a} * {x - 1} + {b}))</tool><result>{c - value}</result> too small."
    assert checks_right(head, ex) == [(False, True)] and checks_right(tool, ex) == [(True, True)]
    assert checks_right(head.replace("too small", "ok"), ex) == [(False, False)]  # the verdict must follow
    assert checks_right(tool.replace("too small", "too big"), ex) == [(True, False)]
    wrong_sum = head.replace(f"+ {b} = {value},", f"+ {b} = {value + 1},")
    assert checks_right(wrong_sum, ex) == [(False, False)]
    assert checks_right(tool.replace(f"({c} -", f"({c + 1} -"), ex) == [(True, False)]  # the check of another equation
