"""Chapter 5's explorers and figures: controls, frames, and the numbers they show."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from lmlab.presets import PRESETS
from lmlab.rope import apply_rope
from lmlab.transformer import active_param_count, param_count
from lmlab.viz.ch05_transformer import _rope_score, calculator_parts
from lmlab.viz.core import figure_to_png

matplotlib.use("Agg")


def test_calculator_has_real_ranges_and_fixed_values_get_no_control():
    from lmlab.widgets import model_calculator_explorer

    box = model_calculator_explorer(layers=(1, 2, 3), width=(64, 128), dpi=30)
    assert set(box.controls) == {"layers", "width"}
    assert box.frames == 6
    with pytest.raises(ValueError, match="two or more values"):
        model_calculator_explorer(layers=(1,), width=(64,))


def test_preset_calculator_covers_the_presets():
    from lmlab.widgets import preset_calculator_explorer

    few = {name: PRESETS[name] for name in ("gpt2", "mixtral-8x7b")}
    box = preset_calculator_explorer(few, context=(1024, 4096), dpi=30)
    assert box.frames == 4
    assert list(box.controls["model"].options) == ["gpt2", "mixtral-8x7b"]
    box = preset_calculator_explorer(few, dpi=30)  # each model at its own context
    assert box.frames == 2 and set(box.controls) == {"model"}


def test_calculator_parts_split_idle_experts_and_add_up():
    for name, config in PRESETS.items():
        parts = calculator_parts(config)
        assert sum(parts.values()) == param_count(config), name
        assert param_count(config) - parts["idle experts"] == active_param_count(config), name
    assert calculator_parts(PRESETS["llama-3-8b"])["idle experts"] == 0
    assert calculator_parts(PRESETS["mixtral-8x7b"])["idle experts"] > 0


def test_rope_score_formula_matches_rotating_the_vectors():
    """The closed form the figures use equals q_m·k_n computed with apply_rope."""
    g = torch.Generator().manual_seed(0)
    D, T = 16, 40
    q, k = torch.randn(D, generator=g, dtype=torch.float64), torch.randn(D, generator=g,
                                                                          dtype=torch.float64)
    qs = apply_rope(q.expand(1, 1, T, D).contiguous(), theta=100.0)[0, 0]
    ks = apply_rope(k.expand(1, 1, T, D).contiguous(), theta=100.0)[0, 0]
    m = 30
    n = torch.arange(T)
    direct = ks @ qs[m]
    formula = _rope_score(q, k, m - n, 100.0)
    torch.testing.assert_close(formula, direct, rtol=1e-5, atol=1e-4)


def test_rope_explorer_frames_change_with_both_controls():
    from lmlab.viz.ch05_transformer import rope_pair_figure
    from lmlab.widgets import rope_explorer

    box = rope_explorer(positions=(0, 8), pairs=(0, 3), dpi=30)
    assert box.frames == 4 and set(box.controls) == {"position", "pair"}
    a = figure_to_png(rope_pair_figure(8, 0), dpi=30)
    assert a != figure_to_png(rope_pair_figure(8, 3), dpi=30)
    assert a != figure_to_png(rope_pair_figure(0, 0), dpi=30)
    with pytest.raises(ValueError, match="pair 40 is out of range"):
        rope_explorer(pairs=(40,))
