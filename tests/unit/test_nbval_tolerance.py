"""The nbval tolerance plugin (tests/notebooks/nbval_tolerance.py): numbers within the
tolerance pass, anything else still fails nbval's exact comparison."""

from tests.notebooks.nbval_tolerance import snap


def test_numbers_within_tolerance_take_the_stored_value():
    stored = "validation loss 2.291 nats/char, perplexity 9.9 (uniform: 111)\n"
    fresh = "validation loss 2.305 nats/char, perplexity 10.0 (uniform: 111)\n"
    assert snap(stored, fresh, rtol=0.03, atol=0) == stored


def test_a_number_outside_the_tolerance_is_left_for_nbval_to_report():
    stored = "validation loss 2.291 nats/char"
    fresh = "validation loss 4.100 nats/char"
    assert snap(stored, fresh, rtol=0.03, atol=0) == fresh


def test_changed_words_are_never_excused():
    stored = "validation loss 2.291 nats/char"
    fresh = "validation accuracy 2.291 nats/char"
    assert snap(stored, fresh, rtol=0.5, atol=1) == fresh


def test_a_missing_number_is_not_excused():
    assert snap("capital 92%, plural 100%", "capital 92%", rtol=0.1, atol=5) == "capital 92%"


def test_absolute_tolerance_for_percentages_and_thousands_separators():
    stored = "skip-gram ['1%', '6%', '44%'] 2,230 steps"
    fresh = "skip-gram ['3%', '9%', '41%'] 2,231 steps"
    assert snap(stored, fresh, rtol=0, atol=5) == stored
    assert snap(stored, "skip-gram ['3%', '19%', '41%'] 2,231 steps", rtol=0, atol=5) != stored


def test_the_plugin_extends_nbval_cell_comparison():
    from nbval.plugin import IPyNbCell

    from tests.notebooks import nbval_tolerance

    nbval_tolerance.pytest_configure(None)
    nbval_tolerance.pytest_configure(None)  # idempotent
    assert getattr(IPyNbCell.compare_outputs, "_lmlab_tolerance", False)
