"""A bad row of a question/answer file is named where its user finds it: by its line in a JSON Lines or CSV file
(what an editor shows), by its row, counted from 0, where a file has no lines; a file that is not JSON Lines is
refused naming the line that breaks and showing its start, before any model work."""

import json

import pytest

from r1lab.data.files import read_table
from r1lab.errors import ConfigError
from r1lab.recipes.tasks import load_task


def qa_rows(n):
    return [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(n)]


def jsonl_lines(rows):
    return [json.dumps(r) for r in rows]


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_jsonl_row_without_an_answer_is_named_by_its_line(tmp_path):
    rows = qa_rows(20)
    del rows[10]["answer"]  # the 11th line
    path = write_lines(tmp_path / "qa.jsonl", jsonl_lines(rows))
    with pytest.raises(ConfigError) as err:
        load_task(path, test_size=2)
    assert str(err.value) == f"{path}: line 11 has an empty or missing 'answer' field"


def test_blank_lines_count_in_the_line_number(tmp_path):
    rows = qa_rows(20)
    rows[5]["question"] = "   "
    lines = jsonl_lines(rows)
    path = write_lines(tmp_path / "qa.jsonl", ["", *lines[:3], "  ", "", *lines[3:]])  # rows 0-2 on lines 2-4
    with pytest.raises(ConfigError, match=r"qa\.jsonl: line 9 has an empty 'question' field"):
        load_task(path, test_size=2)


def test_broken_json_names_its_line_and_shows_its_start(tmp_path):
    lines = jsonl_lines(qa_rows(20))
    lines[2] = lines[2][:-1]  # the closing brace of line 3 lost
    path = write_lines(tmp_path / "broken.jsonl", lines)
    with pytest.raises(ConfigError) as err:
        load_task(path, test_size=2)
    message = str(err.value)
    assert message.startswith(f"{path}: line 3 is not valid JSON (")
    assert '\'{"question": "What is 2 + 2?", "answer": "4"\'' in message  # the line's start, as written
    assert "one JSON object per line" in message
    with pytest.raises(ConfigError, match=r"broken\.jsonl: line 3 is not valid JSON"):
        read_table(path)  # SFT data reads files through it too


def test_a_line_that_is_json_but_no_object_is_named(tmp_path):
    lines = jsonl_lines(qa_rows(20))
    lines[4] = "[1, 2]"
    with pytest.raises(ConfigError, match=r"list\.jsonl: line 5 is an array, not an object .*: '\[1, 2\]'"):
        load_task(write_lines(tmp_path / "list.jsonl", lines), test_size=2)


def test_csv_row_is_named_by_its_line_after_the_header(tmp_path):
    lines = ["question,answer", *(f"What is {i} + {i}?,{2 * i}" for i in range(20))]
    lines[10] = "What is 9 + 9?,"  # row 9: line 11, the header being line 1
    path = write_lines(tmp_path / "qa.csv", lines)
    with pytest.raises(ConfigError, match=r"qa\.csv: line 11 has an empty or missing 'answer' field"):
        load_task(path, test_size=2)
    # a quoted field may span lines: the rows after it start further down
    lines[3] = '"What is\n2 + 2?",4'
    with pytest.raises(ConfigError, match=r"qa\.csv: line 12 has an empty or missing 'answer' field"):
        load_task(write_lines(tmp_path / "qa.csv", lines), test_size=2)


def test_a_test_file_row_is_named_in_the_test_file(tmp_path):
    train = write_lines(tmp_path / "train.jsonl", jsonl_lines(qa_rows(20)))
    rows = qa_rows(5)
    rows[3]["answer"] = "work #### "
    test = write_lines(tmp_path / "test.jsonl", jsonl_lines(rows))
    with pytest.raises(ConfigError, match=r"test\.jsonl: line 4 has an empty 'answer' field after '####'"):
        load_task(train, test_file=test)


def test_files_without_lines_name_the_row_from_0(tmp_path):
    import datasets

    rows = qa_rows(20)
    rows[9]["answer"] = None
    data = datasets.Dataset.from_list(rows)
    data.to_parquet(str(tmp_path / "qa.parquet"))
    with pytest.raises(ConfigError, match=r"qa\.parquet\[train\]: row 9 \(counting from 0; a \.parquet file has no lines\) "
                                          r"has an empty or missing 'answer' field"):
        load_task(str(tmp_path / "qa.parquet"), test_size=2)
    data.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ConfigError, match=r"saved\[train\]: row 9 \(counting from 0\) has an empty or missing 'answer'"):
        load_task(str(tmp_path / "saved"), test_size=2)
    (tmp_path / "array.json").write_text(json.dumps(rows, indent=1))  # one JSON array: its rows have no line each
    with pytest.raises(ConfigError, match=r"array\.json\[train\]: row 9 \(counting from 0; its rows are not one per line\)"):
        load_task(str(tmp_path / "array.json"), test_size=2)


def test_conversational_rows_of_a_jsonl_file_are_named_by_line(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "solution": str(i + 1)} for i in range(10)]
    rows[1]["prompt"].append({"role": "assistant", "content": "2"})
    with pytest.raises(ConfigError, match=r"chat\.jsonl: line 2 field 'prompt': the last message is the assistant's"):
        load_task(write_lines(tmp_path / "chat.jsonl", jsonl_lines(rows)), question_field="prompt",
                  answer_field="solution", test_size=2, prompt_format="conversational")
