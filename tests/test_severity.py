"""The four-class scheme, the Hayashi count bands and the advice per class."""
import pytest

from acne.severity import (CLASSES, class_scores, count_grade, level_to_class, parse_level,
                           recommendations)


@pytest.mark.parametrize("level, expected", [(-1, "Clear"), (0, "Clear"), (1, "Mild"), (2, "Moderate"),
                                             (3, "Severe"), (4, "Severe")])
def test_levels_map_onto_four_classes(level, expected):
    assert level_to_class(level) == expected


@pytest.mark.parametrize("label, level", [("level -1", -1), ("level 0", 0), ("Level 3", 3), (" level  2 ", 2),
                                          ("LEVEL -1", -1)])
def test_parse_level(label, level):
    assert parse_level(label) == level


@pytest.mark.parametrize("label", ["acne", "level", "level x", "grade 1", "level 5", "level -2", "LABEL_0", ""])
def test_parse_level_refuses_other_labels(label):
    with pytest.raises(ValueError, match="level"):
        parse_level(label)


def test_class_scores_sum_the_levels_of_each_class():
    scores = class_scores({"level -1": 0.1, "level 0": 0.2, "level 1": 0.3, "level 2": 0.15, "level 3": 0.25})
    assert list(scores) == list(CLASSES)
    assert scores["Clear"] == pytest.approx(0.3)  # level -1 + level 0
    assert scores["Mild"] == pytest.approx(0.3)
    assert scores["Moderate"] == pytest.approx(0.15)
    assert scores["Severe"] == pytest.approx(0.25)
    assert sum(scores.values()) == pytest.approx(1.0)


def test_class_scores_of_a_four_level_grader_are_the_levels():
    scores = class_scores({"level 0": 0.4, "level 1": 0.3, "level 2": 0.2, "level 3": 0.1})
    assert [scores[c] for c in CLASSES] == pytest.approx([0.4, 0.3, 0.2, 0.1])


def test_class_scores_are_normalised():
    scores = class_scores({"level 0": 2.0, "level 3": 2.0})
    assert scores == pytest.approx({"Clear": 0.5, "Mild": 0.0, "Moderate": 0.0, "Severe": 0.5})


@pytest.mark.parametrize("count, grade", [
    (0, "Clear"), (5, "Clear"), (6, "Mild"), (20, "Mild"), (21, "Moderate"), (50, "Moderate"),
    (51, "Severe"), (500, "Severe"),
])
def test_hayashi_bands_at_their_edges(count, grade):
    assert count_grade(count) == grade


@pytest.mark.parametrize("severity", CLASSES)
def test_every_class_has_its_own_advice(severity):
    advice = recommendations(severity)
    assert advice and all(isinstance(line, str) and line for line in advice)
    advice.append("changed")  # a copy: callers cannot change the table
    assert "changed" not in recommendations(severity)


def test_severe_and_moderate_advice_send_people_to_a_doctor():
    assert any("dermatologist" in line for line in recommendations("Severe"))
    assert any("doctor" in line or "dermatologist" in line for line in recommendations("Moderate"))
