import pytest

from core.markdown import table


def test_table_lines():
    assert table(["a", "b"], [[1, "x|y"], ["", 2.5]]) == [
        "| a | b |",
        "|---|---|",
        "| 1 | x\\|y |",
        "| | 2.5 |",
    ]


def test_a_row_of_the_wrong_width_is_an_error():
    with pytest.raises(ValueError, match="2 cells, the header 3"):
        table(["a", "b", "c"], [[1, 2]])
