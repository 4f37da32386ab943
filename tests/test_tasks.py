import json
import threading

import pytest

from r1lab.data.example import Example, Task
from r1lab.data.files import gold_answer, math_equal
from r1lab.data.reasoning_gym import ReasoningGymTask
from r1lab.recipes.tasks import load_task


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def qa_rows(n, start=0):
    return [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(start, start + n)]


def assert_disjoint(task: Task):
    train, test = task.examples("train"), task.examples("test")
    norm = lambda ex: " ".join(ex.prompt.split()).casefold()
    assert train and test
    assert not {norm(e) for e in train} & {norm(e) for e in test}
    assert len({norm(e) for e in train}) == len(train)  # no duplicates within train either
    assert len({e.id for e in train + test}) == len(train) + len(test)


# ---------------------------------------------------------------- file formats


def test_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "add.jsonl", qa_rows(30))
    task = load_task(str(path), test_size=10)
    assert len(task.examples("test")) == 10 and len(task.examples("train")) == 20
    assert_disjoint(task)
    ex = task.examples("test")[0]
    assert isinstance(ex, Example) and ex.id.startswith("add-")
    assert task.score(ex.answer, ex) == 1.0
    assert task.score("-1", ex) == 0.0


def test_ids_and_splits_are_stable(tmp_path):
    path = write_jsonl(tmp_path / "add.jsonl", qa_rows(30))
    a, b = load_task(str(path), test_size=10), load_task(str(path), test_size=10)
    assert [e.id for e in a.examples("test")] == [e.id for e in b.examples("test")]
    c = load_task(str(path), test_size=10, seed=1)
    assert [e.id for e in a.examples("test")] != [e.id for e in c.examples("test")]


def test_parquet_csv_and_save_to_disk(tmp_path):
    import datasets

    data = datasets.Dataset.from_list(qa_rows(20))
    data.to_parquet(str(tmp_path / "d.parquet"))
    data.to_csv(str(tmp_path / "d.csv"), index=False)
    data.save_to_disk(str(tmp_path / "saved"))
    for path in ("d.parquet", "d.csv", "saved"):
        task = load_task(str(tmp_path / path), test_size=5)
        assert len(task.examples("test")) == 5 and len(task.examples("train")) == 15, path
        ex = task.examples("train")[0]
        assert ex.answer == str(2 * int(ex.prompt.split()[2])), path
        assert task.score(ex.answer, ex) == 1.0


def test_dataset_dict_keeps_its_test_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(qa_rows(12)),
                               "test": datasets.Dataset.from_list(qa_rows(3, start=10))})
    dd.save_to_disk(str(tmp_path / "dd"))
    task = load_task(str(tmp_path / "dd"))
    assert len(task.examples("test")) == 3
    assert len(task.examples("train")) == 10  # rows 10, 11 overlap the test split and are dropped
    assert_disjoint(task)


def test_custom_fields_and_int_answers(tmp_path):
    rows = [{"problem": f"{i} squared?", "solution": i * i, "extra": "x"} for i in range(10)]
    path = write_jsonl(tmp_path / "sq.jsonl", rows)
    task = load_task(str(path), question_field="problem", answer_field="solution", test_size=2)
    ex = task.examples("train")[0]
    assert ex.prompt.endswith("squared?") and ex.answer == str(int(ex.prompt.split()[0]) ** 2)


def test_gsm8k_hash_answer(tmp_path):
    rows = [{"question": f"Natalia sold {i} clips...", "answer": f"She sold {i}*2 = <<{i}*2={2*i}>>{2*i}.\n#### {2*i}"}
            for i in range(1, 8)]
    task = load_task(str(write_jsonl(tmp_path / "gsm.jsonl", rows)), test_size=2)
    ex = task.examples("test")[0]
    assert ex.answer == str(2 * int(ex.prompt.split()[2]))
    assert "####" in ex.meta["columns"]["answer"]  # the whole worked solution stays, for a reward that wants it
    assert task.score(ex.answer + ".0", ex) == 1.0
    assert gold_answer("a #### b #### 72 ") == "72"
    assert gold_answer("so the answer is \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"


@pytest.mark.parametrize("answer, gold", [
    ("0.5", "\\frac{1}{2}"), ("\\frac{1}{2}", "0.5"), ("72.0", "72"), ("1/2", "\\frac{1}{2}"),
    ("  72 ", "72"), ("x+1", "1+x"), ("\\sqrt{2}", "\\sqrt 2"), ("$72", "72"), ("\\$72", "72"),
    ("\\boxed{5}", "5"), ("\\{1,2\\}", "\\{2,1\\}"), ("knights and  knaves", "knights and knaves"),
])
def test_math_equal_equivalent(answer, gold):
    assert math_equal(answer, gold)


@pytest.mark.parametrize("answer, gold", [
    ("7", "72"), ("1, 2, 72", "72"), ("", "72"), (None, "72"), ("three", "3"), ("\\frac{1}{", "1"),
    ("9" * 5000, "9"), ("\\left(", "1"), ("}}}{{{", "1"),
])
def test_math_equal_different_or_garbage(answer, gold):
    assert not math_equal(answer, gold)


def test_math_equal_off_main_thread():
    # math-verify's signal-based timeout raises outside the main thread unless disabled
    results = []
    t = threading.Thread(target=lambda: results.append((math_equal("0.25", "\\frac{1}{4}"), math_equal("3", "4"))))
    t.start(); t.join()
    assert results == [(True, False)]


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_task(str(tmp_path / "nope.jsonl"))


def test_unsupported_suffix_and_bad_dir(tmp_path):
    (tmp_path / "d.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"d\.txt.*\.jsonl"):
        load_task(str(tmp_path / "d.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="save_to_disk"):
        load_task(str(tmp_path / "empty"))


def test_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))
    with pytest.raises(ValueError) as e:
        load_task(str(path), question_field="problem", test_size=1)
    msg = str(e.value)
    assert "'problem'" in msg and "qa.jsonl" in msg and "question" in msg and "answer" in msg


@pytest.mark.parametrize("bad", [None, "", "   ", "work #### "])
def test_empty_answer(tmp_path, bad):
    rows = qa_rows(5)
    rows[3]["answer"] = bad
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    with pytest.raises(ValueError, match=r"qa\.jsonl: line 4 has an empty .*'answer'"):  # the 4th line holds row 3
        load_task(str(path), test_size=1)


def test_too_small_for_test_size(tmp_path):
    with pytest.raises(ValueError, match="test_size"):
        load_task(str(write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))))  # default test_size=200


def test_bad_split(tmp_path):
    task = load_task(str(write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))), test_size=1)
    with pytest.raises(ValueError, match="split"):
        task.examples("validation")


# ---------------------------------------------------------------- splits


def test_duplicates_never_cross_splits(tmp_path):
    rows = qa_rows(20)
    dupes = [dict(r, question="  " + r["question"].replace(" ", "   ") + "\n") for r in rows] * 2  # whitespace variants
    path = write_jsonl(tmp_path / "dup.jsonl", rows + dupes)
    for seed in range(5):
        task = load_task(str(path), test_size=5, seed=seed)
        assert_disjoint(task)
        assert len(task.examples("train")) == 15


def test_test_file_and_train_size(tmp_path):
    train_path = write_jsonl(tmp_path / "train.jsonl", qa_rows(40))
    test_path = write_jsonl(tmp_path / "test.jsonl", qa_rows(10, start=35))  # 5 overlap train
    task = load_task(str(train_path), test_file=str(test_path), train_size=20)
    assert len(task.examples("test")) == 10  # the test file is used whole
    assert len(task.examples("train")) == 20
    assert all(e.id.startswith("test-") for e in task.examples("test"))
    assert_disjoint(task)
    full = load_task(str(train_path), test_file=str(test_path))
    assert len(full.examples("train")) == 35


def test_test_file_only_for_files():
    with pytest.raises(ValueError, match="test_file"):
        load_task("reasoning-gym:countdown", test_file="x.jsonl")


# ---------------------------------------------------------------- reasoning-gym


@pytest.mark.parametrize("name", ["countdown", "basic_arithmetic"])
def test_reasoning_gym(name):
    task = load_task(f"reasoning-gym:{name}", train_size=8, test_size=4, seed=3)
    assert isinstance(task, ReasoningGymTask) and task.name == f"reasoning-gym:{name}"
    assert len(task.examples("test")) == 4 and 0 < len(task.examples("train")) <= 8
    assert_disjoint(task)
    for ex in task.examples("test") + task.examples("train")[:2]:
        assert "entry" in ex.meta
        assert task.score(ex.answer, ex) == 1.0
        # countdown gives 0.01 "participation" credit for any wrong string; it is clamped to [0, 1], not binarised
        assert task.score("garbage", ex) <= 0.01
        assert task.score("", ex) <= 0.01
    again = load_task(f"reasoning-gym:{name}", train_size=8, test_size=4, seed=3)
    assert [e.prompt for e in again.examples("test")] == [e.prompt for e in task.examples("test")]


def test_reasoning_gym_basic_arithmetic_garbage_is_zero():
    task = load_task("reasoning-gym:basic_arithmetic", train_size=2, test_size=2)
    ex = task.examples("test")[0]
    assert task.score("garbage", ex) == 0.0


def test_reasoning_gym_unknown():
    with pytest.raises(ValueError, match=r"countdwn.*countdown.*DATASETS"):
        load_task("reasoning-gym:countdwn")


def test_bad_name_and_sizes():
    with pytest.raises(ValueError, match="task name"):
        load_task("")
    with pytest.raises(ValueError, match="test_size"):
        load_task("reasoning-gym:countdown", test_size=0)
    with pytest.raises(ValueError, match="train_size"):
        load_task("reasoning-gym:countdown", train_size=-1)


def test_tinyworld_dispatch():
    task = load_task("tinyworld", train_size=10, test_size=5)
    assert isinstance(task, Task) and task.name == "tinyworld"
    assert len(task.examples("test")) == 5 and 0 < len(task.examples("train")) <= 10
