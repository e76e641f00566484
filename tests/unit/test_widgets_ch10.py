"""Chapter 10's figures and explorers draw stored runs; every frame differs."""

import matplotlib.pyplot as plt
import pytest

from lmlab.viz import (
    accuracy_ci_plot,
    ci_width_plot,
    curve_plot,
    family_masks_plot,
    finetune_curves_plot,
    mlm_rates_plot,
    overlap_hist_plot,
    sparse_matmul_plot,
    sparsity_loss_plot,
)
from lmlab.widgets import dpo_explorer, lora_explorer


def _ft_run(r=0, alpha=0.0, acc=0.6, trainable=1000):
    return {"r": r, "alpha": alpha, "trainable": trainable, "total": 100_000,
            "val_step": [10, 20, 30], "val": [0.3, acc - 0.1, acc], "test_acc": acc,
            "test_ci": [acc - 0.05, acc + 0.05], "test_n": 300}


def _dpo_run(beta):
    return {"beta": beta, "val_step": [10, 20], "val": [0.1 * beta, 0.5 / beta],
            "kl_proxy": 2.0 / beta, "win_rate": {"base": 0.4, "sft": 0.6, "dpo": 0.6 + beta / 10}}


def test_lora_explorer_has_one_frame_per_rank_and_alpha():
    runs = {(r, float(a)): _ft_run(r, a, acc=0.5 + r / 100 + a / 1000, trainable=r * 500)
            for r in (1, 4) for a in (8, 32)}
    box = lora_explorer(runs, _ft_run(acc=0.7, trainable=100_000),
                        {"majority": 0.25, "bag_of_words": 0.8})
    assert set(box.controls) == {"r", "alpha"} and box.frames == 4


def test_lora_explorer_needs_every_combination():
    runs = {(1, 8.0): _ft_run(1, 8.0), (4, 32.0): _ft_run(4, 32.0)}
    with pytest.raises(ValueError, match="combinations"):
        lora_explorer(runs, _ft_run(), {})


def test_dpo_explorer_has_a_beta_slider():
    box = dpo_explorer([_dpo_run(b) for b in (1.0, 0.1, 0.3)])
    assert set(box.controls) == {"beta"} and box.frames == 3
    with pytest.raises(ValueError, match="at least two"):
        dpo_explorer([_dpo_run(0.1)])


def test_figures_draw():
    figs = [
        family_masks_plot(),
        mlm_rates_plot({"a": 0.1, "b": 0.8}, {"a": 0.15, "b": 0.8}),
        curve_plot({"x": ([1, 2], [3, 2])}, hlines={"ref": 2.5}),
        finetune_curves_plot({"full": _ft_run()}, {"majority": 0.25}),
        accuracy_ci_plot(["a", "b"], [0.5, 0.7], [(0.4, 0.6), (0.6, 0.8)], n=300),
        ci_width_plot([10, 100], {"p = 0.5": [0.5, 0.2]}),
        overlap_hist_plot({"clean": [0.0, 0.1], "leaked": [1.0, 0.9]}, n=8),
        sparsity_loss_plot({"u": ([0, 0.5], [1.0, 1.2])}, dense=1.0, points={"2:4": (0.5, 1.3)}),
        sparse_matmul_plot([0.5, 0.9], {"csr": [2.0, 0.5]}, dense=1.0),
    ]
    assert all(f.axes for f in figs)
    plt.close("all")
