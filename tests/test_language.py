import pytest

from r1lab.data.format import thinking_part
from r1lab.rewards.language import count_words, is_mixed, language_consistency_reward, language_share
from r1lab.rewards.registry import REWARD_FUNCTIONS, Rewards
from r1lab.tinyworld.problems import TinyWorldTask


def test_pure_english_and_pure_chinese():
    assert language_share("<think> try adding first, then check </think>") == 1.0
    assert language_share("<think> 先加再检查 </think>") == 0.0
    assert language_share("<think> 先加再检查 </think>", target="zh") == 1.0


def test_mixed_counts_each_han_character_as_a_word():
    # words: try, 不, 对, wait -> 2 of 4 Latin
    assert language_share("<think> try 3 + 5 不对 wait </think>") == 2 / 4
    assert language_share("<think> try 3 + 5 不对 wait </think>", target="zh") == 2 / 4
    # 试 | 3 + 5 = 8, 8 * 7 = 56 | 不 对 | . | 等 等 | , | 再 算 | then -> 1 Latin of 8 words
    text = "<think> 试 3 + 5 = 8, 8 * 7 = 56 不对. 等等, 再算 then </think> <answer> 56 </answer>"
    assert language_share(text) == 1 / 8
    assert language_share(text, target="zh") == 7 / 8


def test_neutral_characters_and_no_words():
    assert language_share("<think> 3 + 5 = 8, 8 * 7 = 56. </think> <answer> 56 </answer>") is None
    assert language_share("") is None
    assert language_consistency_reward("<think> 3 + 5 = 8 </think> <answer> 8 </answer>") == 1.0
    # CJK punctuation and full-width digits are not words
    assert language_share("<think> ok。，！ ３ </think>") == 1.0
    assert count_words("。，、「」") == {"en": 0, "zh": 0, "other": 0}


def test_tags_and_the_answer_part_are_ignored():
    assert language_share("<think> wait </think> <answer> 五十六 </answer>") == 1.0
    assert language_share("<think> 等 </think> <answer> fifty six </answer>") == 0.0
    # tags inside the thinking are neutral too (their letters are not words)
    assert language_share("<think> <answer> 等 </answer> </think>") == 0.0


def test_thinking_part_without_tags():
    assert thinking_part("try 不 </think> <answer> x </answer>").split() == ["try", "不"]  # <think> pre-filled by the template
    # no closing tag: the whole text is thinking (answer included)
    assert language_share("<think> 等 <answer> ok") == 1 / 2


def test_word_definition():
    assert count_words("don't café 3x+y") == {"en": 4, "zh": 0, "other": 0}  # don't, café, x, y
    assert count_words("㐀 extension-A") == {"en": 2, "zh": 1, "other": 0}
    assert count_words("привет мир, ok") == {"en": 1, "zh": 0, "other": 2}
    assert language_share("<think> привет ok </think>") == 1 / 2  # another script counts against the target


def test_reward_and_is_mixed():
    assert language_consistency_reward("<think> try 3 + 5 不对 wait </think>") == 0.5
    assert language_consistency_reward("<think> try 3 + 5 不对 wait </think>", None, target="zh", num_tokens=9) == 0.5
    assert is_mixed("<think> try 3 + 5 不对 wait </think>")
    assert not is_mixed("<think> all good here </think>")
    assert not is_mixed("<think> 1 + 1 </think>")  # no words: nothing to be mixed
    text = "<think> " + "word " * 19 + "字 </think>"  # 19 of 20 = 0.95
    assert not is_mixed(text) and is_mixed(text, threshold=0.96)


def test_bad_target():
    with pytest.raises(ValueError, match="target"):
        language_share("hi", target="fr")


def test_registered_as_a_reward():
    task = TinyWorldTask("tinyworld", train_size=10, test_size=2)
    fn = REWARD_FUNCTIONS["language"](task)
    assert fn("<think> 试 a </think>", None, num_tokens=3, max_tokens=8, truncated=False) == 0.5
    totals, raw = Rewards({"language": 2.0}, task)(["<think> 不 ok </think>"], task.examples("test")[:1],
                                                  [{"num_tokens": 3, "max_tokens": 8, "truncated": False}])
    assert raw["language"] == [0.5] and totals == [1.0]
