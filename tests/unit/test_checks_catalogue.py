"""Every graded part of every chapter, generically:

* the reference passes its own check (on the visible and on a hidden seed);
* every catalogued mistake is caught and named by its hint;
* a solution that only delegates to the guarded lmlab reference is refused;
* every part belongs to an exercise notebook that calls its check.
"""

import re
from pathlib import Path

import pytest

from lmlab.checks import PARTS, run_part
from lmlab.checks.core import _resolve

ROOT = Path(__file__).resolve().parents[2]
PART_NAMES = sorted(PARTS)
MISTAKES = [(name, m.name) for name in PART_NAMES for m in PARTS[name].mistakes]


@pytest.mark.parametrize("name", PART_NAMES)
@pytest.mark.parametrize("seed", [0, 12345])
def test_reference_passes(name, seed):
    run_part(PARTS[name], PARTS[name].reference, seed=seed, quiet=True)


@pytest.mark.parametrize("name, mistake", MISTAKES)
def test_each_catalogued_mistake_is_diagnosed(name, mistake):
    part = PARTS[name]
    entry = next(m for m in part.mistakes if m.name == mistake)
    with pytest.raises(AssertionError) as info:
        run_part(part, entry.fn, quiet=True)
    message = str(info.value)
    assert f"Likely mistake: {entry.hint}" in message, message


@pytest.mark.parametrize("name", PART_NAMES)
def test_delegating_to_lmlab_is_refused(name):
    part = PARTS[name]
    assert part.guard, f"part {name} guards no reference"
    owner, attr = _resolve(part.guard[0])

    def delegate(*args, **kwargs):
        return getattr(owner, attr)(*args, **kwargs)

    with pytest.raises(AssertionError, match="the reference this exercise asks you to write"):
        run_part(part, delegate, quiet=True)


@pytest.mark.parametrize("name", PART_NAMES)
def test_every_part_is_graded_in_its_exercise(name):
    part = PARTS[name]
    assert part.chapter, f"part {name} names no chapter"
    sources = list((ROOT / "solutions" / part.chapter).glob("*.ipynb"))
    assert sources, f"no solutions/{part.chapter}/*.ipynb for part {name}"
    text = "".join(p.read_text() for p in sources)
    assert re.search(rf"check_{name}\(", text), f"no notebook in solutions/{part.chapter} calls check_{name}"


def test_part_names_are_unique_and_chapters_have_enough_parts():
    by_chapter = {}
    for part in PARTS.values():
        by_chapter.setdefault(part.chapter, []).append(part.name)
    for chapter, names in by_chapter.items():
        assert len(names) >= 4, f"{chapter} has {len(names)} graded parts, needs at least 4"
