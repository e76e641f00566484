"""Explorers: frames linked client-side, one per combination, each different."""

import ipywidgets as widgets
import pytest

from lmlab.viz import new_figure
from lmlab.widgets import frame_explorer, roofline_explorer


def _render(a, b):
    fig, ax = new_figure(2, 2)
    ax.plot([0, 1], [0, float(a) * float(b)])
    ax.set_title(f"{a}-{b}")
    return fig


def _links() -> dict[str, tuple[str, str]]:
    """Every jslink made so far: target model id -> (source model id, source attribute)."""
    state = widgets.Widget.get_manager_state()["state"]
    links = {}
    for s in state.values():
        if s["model_name"] == "LinkModel":
            (source, source_attr), (target, target_attr) = s["state"]["source"], s["state"]["target"]
            assert target_attr == "selected_index"
            links[target.removeprefix("IPY_MODEL_")] = (source.removeprefix("IPY_MODEL_"), source_attr)
    return links


def test_frame_explorer_builds_nested_stacks_linked_to_controls():
    box = frame_explorer(_render, {"a": [1, 2], "b": [3, 4, 5]}, kinds={"a": "dropdown"})
    assert box.frames == 6
    assert isinstance(box.controls["a"], widgets.Dropdown)
    assert isinstance(box.controls["b"], widgets.SelectionSlider)
    outer = box.children[-1]
    assert isinstance(outer, widgets.Stack) and len(outer.children) == 2
    assert all(len(inner.children) == 3 for inner in outer.children)
    images = [img.png for inner in outer.children for img in inner.children]
    assert len(set(images)) == 6, "every frame must differ"
    assert "lmlab-explorer" in box._dom_classes
    # the outer stack follows control a, every inner stack control b, in the browser
    links = _links()
    a, b = box.controls["a"].model_id, box.controls["b"].model_id
    assert links[outer.model_id] == (a, "index")
    assert all(links[inner.model_id] == (b, "index") for inner in outer.children)


def test_frame_explorer_limits_and_errors():
    with pytest.raises(ValueError, match="more than max_frames=4"):
        frame_explorer(_render, {"a": [1, 2, 3], "b": [1, 2]}, max_frames=4)
    with pytest.raises(ValueError, match=r"axes\['a'\] is empty"):
        frame_explorer(_render, {"a": [], "b": [1]})
    with pytest.raises(ValueError, match="at least one control"):
        frame_explorer(_render, {})


def test_roofline_explorer_has_an_operation_and_a_size():
    box = roofline_explorer(3e11, 3e10, measured=[("matmul", 50.0, 1e11)], sizes=(16, 1024))
    assert set(box.controls) == {"operation", "n"}
    assert box.frames == 3 * 2


def test_roofline_explorer_rejects_unknown_operations():
    from lmlab.widgets.ch01_chips import operation_cost

    with pytest.raises(ValueError, match="operation='conv'"):
        operation_cost("conv", 8)


def test_frames_are_stored_at_twice_their_display_size_with_a_description():
    from lmlab.viz.core import png_size

    box = frame_explorer(_render, {"a": [1, 2], "b": [3]}, title="Demo", dpi=50)
    frame = box.children[-1].children[0].children[0]
    width, _ = png_size(frame.png)
    assert f'width="{width // 2}"' in frame.value
    assert 'alt="Demo: a = 1, b = 3"' in frame.value
    # without a dpi the first frame fixes one for all frames: the column-filling one,
    # capped at 110 so a small figure (2 inches here) is not blown up
    fitted = frame_explorer(_render, {"a": [1, 2], "b": [3]})
    shown = {png_size(stack.children[0].png)[0] // 2 for stack in fitted.children[-1].children}
    assert len(shown) == 1 and shown.pop() <= 2.3 * 110


def test_png_size_reads_the_header_and_rejects_other_bytes():
    from lmlab.viz.core import figure_to_png, new_figure, png_size

    fig, _ = new_figure(2.0, 1.0)
    fig.set_layout_engine("none")
    png = figure_to_png(fig, dpi=50)
    assert 90 <= png_size(png)[0] <= 110  # 2 inches at 50 dpi, cropped to the drawing
    with pytest.raises(ValueError, match="PNG signature"):
        png_size(b"GIF89a" + bytes(30))


def test_roofline_title_picks_a_unit_that_shows_the_time():
    from lmlab.widgets.ch01_chips import _duration

    assert _duration(2.5e-8) == "25 ns"
    assert _duration(3.2e-6) == "3.2 µs"
    assert _duration(0.0123) == "12.3 ms"
    assert _duration(2.0) == "2 s"
