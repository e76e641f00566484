"""A correct but different implementation of chapter 7's speculative-decoding part, as a
student might write it (vectorised tests, searchsorted for the sampling)."""

EXTRA = {
    "ch07_inference": {
        "speculative_accept": """\
import torch

def speculative_accept(draft_probs, target_probs, draft_tokens, uniforms):
    k = draft_tokens.shape[0]
    rows = torch.arange(k)
    ratio = target_probs[rows, draft_tokens] / draft_probs[rows, draft_tokens]
    rejected = (uniforms[:k] >= ratio).nonzero().flatten()
    n = int(rejected[0]) if rejected.numel() else k
    if n == k:
        dist = target_probs[k].double()
    else:
        dist = (target_probs[n] - draft_probs[n]).double().clamp(min=0)
        dist = dist / dist.sum()
    cdf = dist.cumsum(0)
    token = torch.searchsorted(cdf, uniforms[k:].double(), right=True)
    return n, min(int(token), len(cdf) - 1)
""",
    },
}
