"""The attention explorer: where does each word of a sentence look, per layer and head?

Attention patterns are only interesting once trained, so this module also holds a tiny
model to look at: two layers of multi-head causal self-attention (no MLP), trained in a few
seconds to continue a repeated phrase. That task is solved by the best-known circuit in
Transformers, the *induction head* (Olsson et al., 2022): a layer-1 head that looks at the
previous token, and a layer-2 head that looks at the token *after* the earlier occurrence
of the current one. Both show up as clean stripes in the explorer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from lmlab.attention import MultiHeadAttention, causal_mask, softmax, split_heads
from lmlab.viz.ch04_attention import attention_heatmap
from lmlab.widgets.frames import frame_explorer

__all__ = [
    "WORDS",
    "DEFAULT_SENTENCE",
    "TinyAttentionModel",
    "train_induction_model",
    "attention_scores",
    "attention_explorer",
]

WORDS = (
    "the a my old red big small green cat dog bird fox man girl house tree river "
    "saw ate liked found near under over and then quickly slowly happy sad blue ."
).split()

DEFAULT_SENTENCE = "a big dog saw the red bird near my old house . a big dog saw the red bird"


class TinyAttentionModel(nn.Module):
    """Token + learned position embeddings, ``n_layers`` × (LayerNorm → causal MHA, residual)."""

    def __init__(self, vocab_size: int = len(WORDS), max_len: int = 24, d_model: int = 32,
                 n_heads: int = 2, n_layers: int = 2) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.attns = nn.ModuleList(MultiHeadAttention(d_model, n_heads) for _ in range(n_layers))
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: Tensor, *, record: list | None = None) -> Tensor:
        """idx (B, T) token ids → logits (B, T, vocab). ``record`` collects each layer's input."""
        if idx.shape[1] > self.max_len:
            raise ValueError(f"idx has {idx.shape[1]} positions, the model knows {self.max_len}")
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for norm, attn in zip(self.norms, self.attns):
            h = norm(x)
            if record is not None:
                record.append(h)
            x = x + attn(h, causal=True)
        return self.head(x)


def _copy_task_batch(batch: int, T: int, vocab: int, span: int, g: torch.Generator):
    """Random tokens with one span of ``span`` tokens repeated later; loss weight on the repeat."""
    idx = torch.randint(0, vocab, (batch, T), generator=g)
    weight = torch.zeros(batch, T)
    for b in range(batch):
        first = int(torch.randint(0, T - 2 * span + 1, (1,), generator=g))
        second = int(torch.randint(first + span, T - span + 1, (1,), generator=g))
        idx[b, second : second + span] = idx[b, first : first + span]
        weight[b, second + 1 : second + span] = 1.0  # the first repeated token is unpredictable
    return idx, weight


def train_induction_model(steps: int = 400, *, seed: int = 0, batch_size: int = 64,
                          lr: float = 3e-3, progress: bool = True) -> TinyAttentionModel:
    """Train :class:`TinyAttentionModel` to continue repeated spans (a few seconds on a CPU).

    Runs on one thread: for a model this small, more threads only add overhead. Returns
    the model in eval mode; ``model.losses`` holds the loss of every step.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = TinyAttentionModel()
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        losses = []
        for _ in tqdm(range(steps), desc="training the tiny model", disable=not progress):
            idx, weight = _copy_task_batch(batch_size, model.max_len, len(WORDS), 8, g)
            logits = model(idx[:, :-1])
            ce = F.cross_entropy(logits.transpose(1, 2), idx[:, 1:], reduction="none")
            loss = (ce * weight[:, 1:]).sum() / weight[:, 1:].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    model.losses = losses
    return model.eval()


def encode(sentence: str) -> Tensor:
    """Words → ids in :data:`WORDS` (1, T)."""
    words = sentence.split()
    unknown = [w for w in words if w not in WORDS]
    if unknown:
        raise ValueError(f"sentence uses words outside WORDS: {unknown}; the vocabulary is {WORDS}")
    return torch.tensor([[WORDS.index(w) for w in words]])


@torch.no_grad()
def attention_scores(model: TinyAttentionModel, sentence: str = DEFAULT_SENTENCE) -> dict[str, Tensor]:
    """Raw scores q·k/√d (T, T) before any mask or softmax, keyed "layer L, head H" (1-based)."""
    record: list[Tensor] = []
    model(encode(sentence), record=record)
    scores = {}
    for layer, (h, attn) in enumerate(zip(record, model.attns), start=1):
        q = split_heads(attn.q_proj(h), attn.n_heads)[0]  # (H, T, d_head)
        k = split_heads(attn.k_proj(h), attn.n_heads)[0]
        s = q @ k.transpose(-2, -1) / math.sqrt(attn.d_head)
        for head in range(attn.n_heads):
            scores[f"layer {layer}, head {head + 1}"] = s[head]
    return scores


def attention_explorer(
    model: TinyAttentionModel | None = None,
    sentence: str = DEFAULT_SENTENCE,
    *,
    temperatures: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    dpi: float | None = None,
):
    """Explorer: pick a layer/head, toggle the causal mask, scale the temperature.

    Shows softmax(scores / temperature) for the sentence, with the future masked or not.
    ``model`` defaults to :func:`train_induction_model` (a few seconds). Frames are
    precomputed, so the widget also works in the static book without a kernel.
    """
    if model is None:
        model = train_induction_model(progress=False)
    scores = attention_scores(model, sentence)
    tokens = sentence.split()
    mask = causal_mask(len(tokens))

    def render(head: str, mask_mode: str, temperature: float):
        s = scores[head] / float(temperature)
        if mask_mode == "causal":
            s = s.masked_fill(~mask, -math.inf)
        title = f"{head}, {'causal mask' if mask_mode == 'causal' else 'no mask'}, T = {temperature:g}"
        return attention_heatmap(softmax(s, dim=-1), tokens, title=title, size=4.5)

    return frame_explorer(
        lambda head, mask, temperature: render(head, mask, temperature),
        {"head": list(scores), "mask": ["causal", "none"], "temperature": list(temperatures)},
        kinds={"head": "dropdown", "mask": "toggle", "temperature": "slider"},
        title="Attention of a tiny trained model: where does each word look?",
        dpi=dpi,
    )
