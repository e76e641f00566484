"""Figures for chapter 2: BPE compression, Word2Vec's sampling and loss, embeddings in 2-D."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmlab.viz.core import new_figure

__all__ = ["bpe_compression_plot", "subsampling_plot", "word2vec_loss_plot", "pca_2d",
           "embedding_pca_plot", "analogy_offsets_plot", "analogy_accuracy_plot"]


def bpe_compression_plot(vocab_sizes: Sequence[int], bytes_per_token: Sequence[float],
                         chars_per_token: float | None = None):
    """Bytes per token against vocabulary size (higher = shorter sequences)."""
    fig, ax = new_figure(6, 3.5)
    ax.plot(vocab_sizes, bytes_per_token, marker="o", label="byte-level BPE")
    ax.axhline(1.0, color="grey", ls=":", label="bytes (vocabulary 256)")
    if chars_per_token is not None:
        ax.axhline(chars_per_token, color="C1", ls="--", label="characters")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("UTF-8 bytes per token")
    ax.set_title("BPE: a bigger vocabulary, shorter sequences")
    ax.legend()
    return fig


def subsampling_plot(counts: torch.Tensor, sample: float = 1e-3, power: float = 0.75):
    """Left: probability of keeping a word against its frequency. Right: the noise
    distribution count^power against the plain unigram distribution, by frequency rank."""
    fig, (left, right) = new_figure(8, 3.2, ncols=2)
    counts = counts.double()
    f = counts / counts.sum()
    keep = (((f / sample).sqrt() + 1) * sample / f).clamp(max=1)
    left.loglog(f.numpy(), keep.numpy(), ".", ms=3)
    left.set_xlabel("word frequency f")
    left.set_ylabel("P(keep)")
    left.set_title(f"subsampling, t = {sample:g}")
    rank = torch.arange(1, len(counts) + 1)
    noise = counts ** power / (counts ** power).sum()
    right.loglog(rank.numpy(), f.numpy(), label="unigram")
    right.loglog(rank.numpy(), noise.numpy(), label=f"unigram^{power:g}")
    right.set_xlabel("frequency rank")
    right.set_ylabel("probability of being a negative")
    right.set_title("negative sampling")
    right.legend()
    fig.tight_layout()
    return fig


def word2vec_loss_plot(histories: dict[str, Sequence[float]]):
    """Mean loss per 1% of training, one line per run."""
    fig, ax = new_figure(6, 3.5)
    for label, history in histories.items():
        x = torch.linspace(0, 100, len(history) + 1)[1:]
        ax.plot(x.numpy(), list(history), label=label)
    ax.set_xlabel("% of training")
    ax.set_ylabel("negative-sampling loss")
    ax.set_title("Word2Vec training")
    ax.legend()
    return fig


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Project rows of x (N, d) on their two principal directions: (N, 2).

    The sign of each direction is fixed (largest coordinate positive), so the picture does
    not flip between runs.
    """
    x = x.double() - x.double().mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    directions = vh[:2]                                              # (2, d)
    flip = directions.gather(1, directions.abs().argmax(1, keepdim=True)).sign()
    return x @ (directions * flip).T


def embedding_pca_plot(coords: dict[str, tuple[float, float]], focus: str | None = None,
                       neighbours: Sequence[tuple[str, float]] = (), title: str = "",
                       zoom: bool = True):
    """Words at fixed 2-D positions; ``focus`` in red, its ``neighbours`` linked to it.

    With ``zoom`` the view frames the focus and its neighbours (other words are clipped).
    """
    fig, ax = new_figure(6.5, 4.5)
    near = {w for w, _ in neighbours}
    for word, (x, y) in coords.items():
        if word == focus or word in near:
            continue
        ax.scatter(x, y, s=10, color="#bbbbbb")
        ax.annotate(word, (x, y), fontsize=9, color="#999999", xytext=(2, 2),
                    textcoords="offset points", annotation_clip=True, clip_on=True)
    labels = []
    if focus is not None:
        fx, fy = coords[focus]
        for word, sim in neighbours:
            x, y = coords[word]
            ax.plot([fx, x], [fy, y], color="C0", lw=0.8, alpha=0.6)
            ax.scatter(x, y, s=25, color="C0", zorder=3)
            labels.append(ax.annotate(f"{word} ({sim:.2f})", (x, y), fontsize=9, color="C0",
                                      xytext=(3, 3), textcoords="offset points"))
        ax.scatter(fx, fy, s=60, color="C1", zorder=4)
        labels.insert(0, ax.annotate(focus, (fx, fy), fontsize=11, weight="bold", color="C1",
                                     xytext=(4, -12), textcoords="offset points"))
    if focus is not None and zoom:
        # Frame the focus and its neighbours: in a picture of all words they overlap.
        xs = [coords[w][0] for w in [focus, *near]]
        ys = [coords[w][1] for w in [focus, *near]]
        all_x = [x for x, _ in coords.values()]
        all_y = [y for _, y in coords.values()]
        pad_x = max(0.25 * (max(xs) - min(xs)), 0.05 * (max(all_x) - min(all_x)), 1e-6)
        pad_y = max(0.25 * (max(ys) - min(ys)), 0.05 * (max(all_y) - min(all_y)), 1e-6)
        ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
        ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or (f"nearest neighbours of '{focus}' (cosine in full dimension)"
                           if focus else "embeddings, first two principal components"))
    _separate_labels(fig, ax, labels)
    return fig


def _separate_labels(fig, ax, labels) -> None:
    """Move labels apart so none overlaps another or leaves the axes: a label in the
    right third is written to the left of its point, and one that overlaps a label
    already placed steps down (or up) in 11-point steps."""
    fig.canvas.draw()
    box = ax.get_window_extent()
    for label in labels:
        x, _ = ax.transData.transform(label.xy)
        if x > box.x0 + 0.66 * box.width:
            label.set_ha("right")
            label.set_position((-label.get_position()[0], label.get_position()[1]))
    placed = []
    tries = [0] + [sign * k * 11 for k in range(1, 7) for sign in (-1, 1)]
    for label in labels:
        dx, dy = label.get_position()
        for extra in tries:
            label.set_position((dx, dy + extra))
            bbox = label.get_window_extent(fig.canvas.get_renderer())
            inside = box.y0 <= bbox.y0 and bbox.y1 <= box.y1
            if inside and not any(bbox.overlaps(other) for other in placed):
                break
        else:
            label.set_position((dx, dy))  # no free spot: keep it next to its point
        placed.append(label.get_window_extent(fig.canvas.get_renderer()))


def analogy_offsets_plot(wv, pairs: Sequence[tuple[str, str]], title: str = ""):
    """Pairs (a, b) in a 2-D PCA of their vectors, an arrow from a to b for each.

    Parallel arrows of similar length are what make ``b - a + c`` land near ``d``.
    """
    words = list(dict.fromkeys(w for pair in pairs for w in pair))
    xy = pca_2d(wv.vectors[[wv.vocab.index(w) for w in words]])
    at = {w: (float(x), float(y)) for w, (x, y) in zip(words, xy, strict=True)}
    fig, ax = new_figure(6, 4)
    for a, b in pairs:
        (xa, ya), (xb, yb) = at[a], at[b]
        ax.annotate("", (xb, yb), (xa, ya), arrowprops={"arrowstyle": "->", "color": "C0",
                                                        "alpha": 0.7})
        ax.scatter([xa, xb], [ya, yb], s=12, color=["C0", "C1"], zorder=3)
        ax.annotate(a, (xa, ya), fontsize=8, xytext=(2, 2), textcoords="offset points")
        ax.annotate(b, (xb, yb), fontsize=8, color="C1", xytext=(2, 2),
                    textcoords="offset points")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "pairs in the first two principal components")
    return fig


def analogy_accuracy_plot(sizes: Sequence[int], accuracies: dict[str, Sequence[float]],
                          xlabel: str = "sentences of training text"):
    """Analogy accuracy (top-1) against the amount of training, one line per model."""
    fig, ax = new_figure(6, 3.5)
    for label, acc in accuracies.items():
        ax.plot(list(sizes), [100 * a for a in acc], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("analogies right (%)")
    ax.set_ylim(0, 102)
    ax.set_title("Analogy accuracy on the synthetic set")
    ax.legend()
    return fig
