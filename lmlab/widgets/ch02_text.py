"""Chapter 2's explorer: pick a word, see its nearest neighbours in a 2-D PCA picture."""

from __future__ import annotations

from collections.abc import Sequence

from lmlab.viz.ch02_text import embedding_pca_plot, pca_2d
from lmlab.widgets.frames import frame_explorer

__all__ = ["embedding_explorer"]


def embedding_explorer(wv, words: Sequence[str], topn: int = 5, dpi: float | None = None):
    """An explorer over ``words`` (at most 40) of :class:`lmlab.word2vec.WordVectors`.

    Neighbours are found by cosine similarity in the full space, over the whole
    vocabulary; the 2-D picture (PCA of the listed words and all their neighbours) is fixed
    across frames so that only the highlight moves.
    """
    words = list(dict.fromkeys(words))
    if not words:
        raise ValueError("words is empty: give the words to pick from")
    if len(words) > 40:
        raise ValueError(f"words has {len(words)} entries; at most 40 keep the page small")
    missing = [w for w in words if w not in wv]
    if missing:
        raise ValueError(f"words contains {missing[0]!r}, which is not in the vocabulary")
    neighbours = {w: wv.most_similar(w, topn) for w in words}
    shown = list(dict.fromkeys(words + [n for w in words for n, _ in neighbours[w]]))
    xy = pca_2d(wv.vectors[[wv.vocab.stoi[w] for w in shown]])
    coords = {w: (float(x), float(y)) for w, (x, y) in zip(shown, xy, strict=True)}

    def render(word: str):
        return embedding_pca_plot(coords, focus=word, neighbours=neighbours[word])

    return frame_explorer(render, {"word": words}, kinds={"word": "dropdown"},
                          title="Nearest neighbours", dpi=dpi, max_frames=40)
