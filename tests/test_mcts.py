"""MCTS over reasoning steps (docs/FAILED.md): the tree's statistics on a toy tree with known values, the value
model learning outcomes, the search's cap and compute ledger, its settings, and whole mcts stages (and resume)."""

import json
import math

import pytest
import torch
from helpers import MICRO, EchoTask

from r1lab.config import ConfigError, MCTSConfig, SamplingConfig
from r1lab.engines import make_engine
from r1lab.recipes.load import load_config
from r1lab.rl import mcts as mcts_module
from r1lab.rl.mcts import TreeSearch
from r1lab.rl.outcome_values import outcome_loss, prefix_values
from r1lab.rl.ppo import ValueModel
from r1lab.rl.tree import Node, backup, best_path, puct, select, select_child, subtree_outcomes, visit_distribution


def toy_tree():
    """root -> a (P 0.6) -> a1, a2; root -> b (P 0.4). Leaf values: a1 = 1, a2 = 0, b = 0.5 twice."""
    root = Node()
    a, b = root.add_child((1,), 0.6), root.add_child((2,), 0.4)
    a1, a2 = a.add_child((3,), 0.5), a.add_child((4,), 0.5)
    backup([root, a, a1], 1.0)
    backup([root, a, a2], 0.0)
    backup([root, b], 0.5)
    backup([root, b], 0.5)
    return root, a, b, a1, a2


def test_tree_statistics_on_a_toy_tree():
    root, a, b, a1, a2 = toy_tree()
    assert (root.visits, a.visits, b.visits, a1.visits) == (4, 2, 2, 1)
    assert root.value_sum == 2.0 and root.q == 0.5 and a.q == 0.5 and b.q == 0.5 and a1.q == 1.0 and a2.q == 0.0
    assert a1.path() == [root, a, a1] and a1.path_tokens() == [1, 3]
    # PUCT = Q + c * P * sqrt(N_parent) / (1 + N): equal Q and N, so the prior decides: a
    assert puct(root, a, 1.0) == pytest.approx(0.5 + 0.6 * 2 / 3)
    assert puct(root, b, 1.0) == pytest.approx(0.5 + 0.4 * 2 / 3)
    assert select_child(root, 1.0) is a
    # under a: a1's Q of 1 beats a2's 0; with c_puct 0 only Q counts
    assert select(root, 1.0) == [root, a, a1] and select(root, 0.0) == [root, a, a1]
    # b visited more: the exploration term shrinks for it and the choice flips to a under any c
    backup([root, b], 0.5)
    assert select_child(root, 5.0) is a
    # the best path follows visits (b: 3, a: 2), not Q
    assert best_path(root) == [root, b]
    assert visit_distribution(root) == [pytest.approx(0.4), pytest.approx(0.6)]
    assert visit_distribution(a1) == []
    a1.terminal, a1.outcome, a2.terminal, a2.outcome = True, 1.0, True, 0.0
    assert sorted(subtree_outcomes(root)) == [0.0, 1.0] and subtree_outcomes(b) == []


def test_select_stops_at_a_terminal_node_and_an_unvisited_child_has_q_zero():
    root = Node()
    done = root.add_child((5,), 1.0)
    done.terminal = True
    backup([root, done], 1.0)
    assert select(root, 1.0) == [root, done]
    lone = Node()
    assert lone.q == 0.0 and best_path(lone) == [lone]  # unvisited: Q 0; a lone root is its own best path


def test_progressive_widening_stops_at_a_node_that_may_have_more_children():
    root, a, b, a1, a2 = toy_tree()
    root.expansions = a.expansions = 1
    assert not root.widens(0.0) and root.widens(0.5)  # floor(4 ** 0.5) = 2 expansions allowed, 1 made
    assert select(root, 1.0, widening=0.5) == [root]
    root.expansions = 2
    assert select(root, 1.0, widening=0.5) == [root, a, a1]  # a: floor(2 ** 0.5) = 1, made
    a1.terminal = True
    assert not a1.widens(0.99)


def test_value_model_loss_falls_on_a_tiny_set(tiny, one_thread):
    model, tokenizer = tiny
    torch.manual_seed(0)
    vm = ValueModel(model)
    pad = tokenizer.eos_token_id
    paths = [([5, 6, 7, 8, 9], 2, 1.0), ([5, 6, 10, 11], 2, 0.0), ([12, 13, 7, 8, 9, 14], 3, 1.0), ([12, 13, 10], 2, 0.0)]
    opt = torch.optim.AdamW(vm.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = outcome_loss(vm, paths, pad)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # 9 states (each path's prefixes from its prompt on), 6 of them on paths with outcome 1; a zero head: V = 0
    assert losses[0] == pytest.approx(6 / 9)
    assert losses[-1] < 0.25 * losses[0]  # the floor: state [5, 6] is on a path of 1 and one of 0, (2 x 0.25) / 9
    good, bad = prefix_values(vm, [[5, 6, 7], [5, 6, 10]], pad)
    assert good > 0.7 and bad < 0.3


class CountingEngine:
    """The torch engine, with every generate_ids call's generated tokens counted."""

    def __init__(self, engine):
        self.engine, self.calls, self.generated = engine, 0, 0

    def generate_ids(self, prompt_ids, sampling, n=1, seeds=None):
        rollout = self.engine.generate_ids(prompt_ids, sampling, n, seeds)
        self.calls += 1
        self.generated += int(rollout.lengths.sum())
        return rollout

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_search_respects_max_expansions_and_counts_tokens(tiny, one_thread, monkeypatch):
    model, tokenizer = tiny
    torch.manual_seed(0)
    engine = CountingEngine(make_engine("torch", model, tokenizer, seed=0))
    valued = []

    def counted_values(vm, seqs, pad):
        valued.extend(seqs)
        return prefix_values(vm, seqs, pad)

    monkeypatch.setattr(mcts_module, "prefix_values", counted_values)
    cfg = MCTSConfig(max_expansions=3, branching=2, step_tokens=2, sampling=SamplingConfig(max_new_tokens=20))
    search = TreeSearch(engine, ValueModel(model), cfg, lambda response, ex: 1.0, {tokenizer.eos_token_id},
                        tokenizer.eos_token_id)
    prompt = tokenizer("Compute 2 + 2", add_special_tokens=False)["input_ids"]
    out = search.run(prompt, "<think>", EchoTask().examples("train")[0])
    assert out.expansions == 3  # an untrained model does not finish in 6 tokens: every expansion is spent
    assert engine.calls == 4  # 3 expansions and the best path's completion
    assert out.policy_tokens == engine.generated
    assert out.value_tokens == sum(map(len, valued)) > 0
    assert all(len(seq) > len(prompt) for seq in valued)
    nodes = [out.root]
    for node in nodes:
        nodes.extend(node.children)
        assert len(node.children) <= 2 * node.expansions and all(len(c.tokens) <= 2 for c in node.children)
        if node.children:
            assert sum(c.prior for c in node.children) == pytest.approx(1.0)
    assert out.root.expansions == 2  # widened once (MCTSConfig's widening 0.5): at 4 visits, floor(4 ** 0.5) = 2
    assert len(nodes) - 1 <= 3 * 2 and out.root.visits == len(nodes) - 1  # each child valued once when made
    assert out.score == 1.0 and len(out.completion) <= 20 and out.finished[-1] == (out.completion, 1.0)


def test_mcts_settings_fail_at_load_naming_the_field():
    cfg = load_config("r1-mcts", ["mcts.branching=4", "stages.mcts.mcts.c_puct=0.5", "sampling.temperature=0.8"])
    stage = cfg.stages[0]
    assert stage.kind == "mcts" and stage.makes_model
    resolved = cfg.stage_mcts(stage)
    assert (resolved.branching, resolved.c_puct, resolved.sampling.temperature) == (4, 0.5, 0.8)
    for override, field in (("mcts.branching=0", "mcts.branching"), ("stages.mcts.mcts.c_puct=-1", "stages.mcts.mcts.c_puct"),
                            ("mcts.sampling.temperature=0", "stages.mcts.mcts.sampling.temperature"), ("mcts.brnaching=2", "mcts.branching"),
                            ("stages.mcts.rl.lr=1", "stages.mcts.rl")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_config("r1-mcts", [override])


def test_mcts_stages_refuse_several_processes():
    with pytest.raises(ConfigError, match="mcts stage with 2 processes"):
        load_config("r1-mcts").check_processes(2)
    load_config("r1-mcts").check_processes(1)


@pytest.mark.slow
def test_mcts_recipe_micro_run(tiny_model_dir, tmp_path):
    """The r1-mcts recipe through the CLI, from the untrained tiny model (no pretraining: the run takes seconds)."""
    from r1lab.ui.cli import main

    micro = [o for o in MICRO if not o.startswith(("model=", "pretrain."))]
    run = tmp_path / "run"
    assert main(["run", "r1-mcts", "--out", str(run), f"model={tiny_model_dir}", *micro, "task=tinyworld/arithmetic",
                 "mcts.steps=2", "mcts.prompts_per_step=2", "mcts.max_expansions=3", "mcts.checkpoint_every=1"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert {"accuracy", "expansions_mean", "tokens_per_problem", "compute_tokens", "step_time"} <= set(r)
        assert 1 <= r["expansions_mean"] <= 3
    assert [r["compute_tokens"] for r in rows] == sorted(r["compute_tokens"] for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"][0]["kind"] == "mcts" and summary["stages"][0]["steps"] == 2
    assert (run / "final" / "config.json").exists()
    assert [p.name for p in (run / "mcts" / "checkpoints").glob("step-*")] and (run / "report.html").exists()


class KilledAt:
    """An engine whose `calls`-th generate_ids raises KeyboardInterrupt, as a kill would stop the run there."""

    def __init__(self, engine, calls):
        self.engine, self.calls = engine, calls

    def generate_ids(self, *args, **kw):
        self.calls -= 1
        if self.calls == 0:
            raise KeyboardInterrupt
        return self.engine.generate_ids(*args, **kw)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_mcts_stage_resumes_where_it_stopped(tiny_model_dir, tmp_path, one_thread):
    from r1lab.models.io import load_model
    from r1lab.rl.mcts_loop import train_mcts

    cfg = MCTSConfig(steps=4, prompts_per_step=2, max_expansions=2, branching=2, step_tokens=3, checkpoint_every=2,
                     lr=1e-2, sampling=SamplingConfig(max_new_tokens=8))

    def run(out, kill_at=None):
        model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32", master_weights=True)
        engine = make_engine("torch", model, tokenizer, seed=0)
        engine = KilledAt(engine, kill_at) if kill_at else engine
        return train_mcts(model, tokenizer, EchoTask(), cfg, out, engine=engine, template="r1-zero", system="", seed=0)

    run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", kill_at=15)  # 6 calls a step: in step 3, after the step-2 checkpoint
    resumed = run(tmp_path / "killed")
    assert resumed["steps"] == 4 and math.isfinite(resumed["compute_tokens"])

    def rows(out):
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("time")}
                for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert rows(tmp_path / "killed") == rows(tmp_path / "whole")


def test_grpo_logs_the_compute_ledger(tiny, tmp_path, one_thread, monkeypatch):
    from helpers import digits, metrics_rows, rl_config, train

    from r1lab.rewards.registry import REWARD_FUNCTIONS

    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)
    model, tokenizer = tiny
    train(model, tokenizer, rl_config(steps=2), tmp_path)
    rows = metrics_rows(tmp_path)
    assert all(r["tokens"] == round(r["completion_len_mean"] * 4 * 8) for r in rows)  # 4 prompts x 8 samples
    assert [r["compute_tokens"] for r in rows] == [rows[0]["tokens"], rows[0]["tokens"] + rows[1]["tokens"]]


def test_compare_puts_stages_on_one_compute_axis_and_a_ledger_per_variant(tmp_path):
    from r1lab.experiments.compare import ledger, read_curves

    rows = [{"stage": "a", "step": 0, "compute_tokens": 0, "eval_pass@1": 0.4},
            {"stage": "a", "step": 1, "accuracy": 0.5, "compute_tokens": 100, "step_time": 1.0},
            {"stage": "b", "step": 1, "accuracy": 0.7, "compute_tokens": 30, "expansions_mean": 4.0, "value_abs_error": 0.2,
             "step_time": 1.0},
            {"stage": "b", "step": 2, "accuracy": 0.9, "compute_tokens": 70, "expansions_mean": 6.0, "value_abs_error": 0.4,
             "step_time": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = read_curves("recipe", tmp_path)
    assert [r["compute_tokens"] for r in curves] == [0, 100, 130, 170] and [r["step"] for r in curves] == [0, 1, 2, 3]
    assert ledger(curves) == {"train_accuracy_last5": pytest.approx(0.7), "compute_tokens": 170,
                              "expansions_per_problem": 5.0, "value_abs_error": pytest.approx(0.3)}
    assert ledger([{"step": 1, "accuracy": 0.5}]) == {}
