import pytest

from r1lab.data.format import split_response, thinking_part


@pytest.mark.parametrize("text, expected", [
    ("<think> a </think> <answer> 4 </answer>", (" a ", " <answer> 4 </answer>")),
    ("a </think> b", ("a ", " b")),  # the r1-zero template pre-filled <think>
    ("<think> a", (" a", None)),  # unclosed: all thinking, no rest yet
    ("no tags", ("no tags", None)),
    ("x <think> a </think>", (" a ", "")),  # before <think> is not thinking
    ("<think> a <think> b </think> c </think> d", (" a <think> b ", " c </think> d")),  # first of each tag counts
])
def test_split_response(text, expected):
    assert split_response(text) == expected


def test_thinking_part_blanks_tags_left_inside():
    assert thinking_part("<think> a <answer> 5 </answer> </think> <answer> 6 </answer>").split() == ["a", "5"]
    assert thinking_part("<think> cut off <answer> 5").split() == ["cut", "off", "5"]  # no </think>: all thinking
