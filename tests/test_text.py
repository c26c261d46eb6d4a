"""Pure text measures: whether a document asks or answers, and word overlap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qkrag.text import carries_answer, is_question, normalize, question_form, sentences, word_overlap, words

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "corpus.jsonl"

QUESTIONS = [
    "Which NFL team won Super Bowl 50?",
    "how do i reset my router",  # a search-box question: no mark, lower case
    "Is it safe to eat rice left out overnight",
    "can i freeze milk",
    "Who invented the telephone",
    "What caused the delay during the development of the AC motor.",  # a stop where the mark should be
    "X.25 uses what type of network",
    "how to descale a kettle",
    "Anyone know a good plumber in Leeds?",
    "Can someone explain how compound interest works? Thanks in advance!",
    "My laptop fan is really loud since the update. I have tried cleaning it. Any ideas?",
    "i cooked rice on sunday and left it out. is it still ok to eat? my friend says no",
    "We just moved into an old flat and the windows drip every morning. Is this normal? Pictures attached.",
    "The tap in the kitchen drips all night. The washer looks fine. Do I need a plumber?",
    "Help!",
    "Please help, my sourdough starter smells like nail polish",
    "Why won't my car start in the cold? It cranks but never catches. Any tips?",
    "Silicates of magnesium and iron make up the Earth's ___",
    "Looking for a babysitter in Leeds, must be free at weekends.",
    "Need a recipe for gluten-free bread",
    "Where can I buy cheap flights to Rome",
]

STATEMENTS = [
    "Bread rises because yeast turns sugar into carbon dioxide, which the gluten network traps as bubbles.",
    "The Denver Broncos won Super Bowl 50, defeating the Carolina Panthers 24-10 at Levi's Stadium.",
    "Can openers were invented in 1858, almost fifty years after the tin can itself.",
    "When water freezes it expands by about nine percent, which is why pipes burst in winter.",
    "Will Smith starred in the 2001 biopic Ali and was nominated for an Academy Award.",
    "Thanks to the new law, road deaths fell sharply in 2019.",
    "Anyone who has visited Paris remembers the view from the top of the Eiffel Tower.",
    "Help desks at the library are staffed from nine to five on weekdays.",
    "What makes the park different from other green spaces is the presence of peacocks and pheasants.",
    "Should the pump fail, a float valve closes the inlet automatically.",
    "How the brain stores long-term memories during sleep remains an open research question.",
    # answers after asking: a FAQ entry, and an abstract that opens with a question
    "What causes rust? Iron reacts with oxygen and water to form hydrated iron oxide.",
    "Does vitamin D prevent fractures? We pooled 11 trials with 31,000 adults. We found that high doses lowered the "
    "risk of hip fracture by 30 percent.",
    "I have been a nurse for twenty years. Burns should be cooled under running water for twenty minutes, not iced.",
    "a study of the wing in a slipstream . an experimental study was made of the lift at two angles .",
    "Q: What is a heat pump? A: A machine that moves heat from outside air or ground into a house.",
    "To stop a dripping tap, turn off the water, unscrew the handle and replace the worn rubber washer.",
    "The question of why the empire fell has been debated for centuries, and historians now stress climate and "
    "disease. Was it decline or transformation? Most now say the latter, citing the survival of Roman law.",
]


@pytest.mark.parametrize("text", QUESTIONS)
def test_questions_and_requests_are_question_form(text):
    assert question_form(text)
    assert not carries_answer(text)


@pytest.mark.parametrize("text", STATEMENTS)
def test_statements_are_not_question_form(text):
    assert not question_form(text)
    assert carries_answer(text)


@pytest.mark.parametrize("text", ["Click here to subscribe", "Read more", "Sign up for our newsletter today!",
                                  "Copyright 2024. All rights reserved.", ""])
def test_boilerplate_carries_no_answer(text):
    assert not carries_answer(text)


def test_the_demo_forum_posts_are_question_form_and_the_answers_are_not():
    docs = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()]
    posts = [d["text"] for d in docs if d["_id"].startswith("post-")]
    answers = [d["text"] for d in docs if not d["_id"].startswith("post-")]
    assert len(posts) == 40 and len(answers) == 160
    assert all(map(question_form, posts))
    assert not any(map(question_form, answers))
    assert all(map(carries_answer, answers))


def test_word_overlap_ignores_function_words_and_order():
    example = "Who did Denver beat in the 2015 AFC Championship game?"
    assert word_overlap(example, example) == 1.0
    assert word_overlap("who did denver beat in the AFC championship game", example) >= 0.8  # one word dropped
    assert word_overlap("What year was the Broncos franchise founded?",
                        "What year was the Carolina Panthers franchise founded?") <= 0.5  # same form, other team
    assert word_overlap("", example) == 0.0


def test_small_helpers():
    assert words("It's a well-known fact: 3 cats.") == ["it's", "a", "well-known", "fact", "3", "cats"]
    assert normalize('  "How does  Insulin work?" ') == "how does insulin work"
    assert is_question("why? ") and not is_question("Why not.")
    assert sentences("We measured e.g. the lift. The drag fell.") == ["We measured e.g. the lift.", "The drag fell."]


def test_normalize_folds_case_punctuation_and_spacing():
    assert normalize('  "How does  Insulin work?" ') == normalize("how does insulin work")


def test_sentences_split_tokenised_lower_case_text_too():
    from qkrag.text import sentences

    cranfield_like = "a study of a wing in a slipstream . an experimental study was made , e.g. at two angles . done ."
    assert sentences(cranfield_like) == ["a study of a wing in a slipstream .",
                                         "an experimental study was made , e.g. at two angles .", "done ."]
    assert sentences("We measured e.g. the lift. The drag fell.") == ["We measured e.g. the lift.", "The drag fell."]


def test_or_list_joins_choices_in_words():
    from qkrag.text import or_list

    assert [or_list(["a"]), or_list(["a", "b"]), or_list(iter("abc"))] == ["a", "a or b", "a, b or c"]


def test_cut_at_word_keeps_short_text_and_cuts_long_text_back_to_a_word():
    from qkrag.text import cut_at_word

    assert cut_at_word("short text", 20) == "short text"
    assert cut_at_word("one two three four", 11) == "one two ..."
