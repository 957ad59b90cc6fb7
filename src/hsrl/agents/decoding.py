"""Decoding slates from a hierarchical SID policy over the trie (DESIGN §7), shared by the HSRL agent
and the service.

* ``beam_search``: the k best complete SIDs by joint log-probability; cost O(D · beam · V), independent
  of the catalogue size.
* ``sample_slate``: k distinct SIDs sampled without replacement: a branch stays open while it holds
  active items not yet placed in the row's slate (trie child counts minus the slate so far). The
  log-probabilities returned are under the trie mask alone, the same mask the learner recomputes.
* ``score_all``: log pi(SID_i | s) for every catalogue item, the reference's O(N · D) path.
"""

from __future__ import annotations

from typing import Any

import torch

from hsrl.agents.base import NEG


@torch.no_grad()
def beam_search(policy: Any, index: Any, state: torch.Tensor, k: int, beam: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Items (B, k) and their log pi (B, k); -1 items where fewer than k complete SIDs exist."""
    b, dim = state.shape
    dev = state.device
    width = max(beam, k)
    depth = len(policy.vocab_sizes)
    prefix = torch.zeros(b, 1, 0, dtype=torch.long, device=dev)
    score = torch.zeros(b, 1, device=dev)
    context = state.unsqueeze(1)
    for level in range(depth):
        w = prefix.shape[1]
        valid = index.child_counts(prefix.reshape(b * w, level)).to(dev) > 0
        logits = policy.logits(level, context.reshape(b * w, dim), valid)  # masked: invalid -> NEG
        vocab = logits.shape[-1]
        total = (score.reshape(b * w, 1) + logits.log_softmax(-1)).reshape(b, w * vocab)
        score, flat = total.topk(min(width if level < depth - 1 else k, w * vocab), dim=1)
        parent, token = flat // vocab, flat % vocab
        prefix = torch.cat([prefix.gather(1, parent[..., None].expand(-1, -1, level)), token[..., None]], dim=2)
        parent_ctx = context.gather(1, parent[..., None].expand(-1, -1, dim))
        parent_logits = None
        if policy.residual == "soft":  # only the soft residual needs the parent's distribution
            parent_logits = logits.reshape(b, w, vocab).gather(1, parent[..., None].expand(-1, -1, vocab))
        context = policy.next_context(level, parent_ctx, token, parent_logits)
    items = index.item_of(prefix.reshape(-1, depth)).view(b, -1).to(dev)
    return items, score


@torch.no_grad()
def sample_slate(
    policy: Any, index: Any, state: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Items (B, k), their tokens (B, k, D) and per-token log pi (B, k, D), sampled without replacement."""
    b, dev = state.shape[0], state.device
    depth = len(policy.vocab_sizes)
    chosen = torch.zeros(b, 0, depth, dtype=torch.long, device=dev)
    logps = []
    for _ in range(k):
        context = state
        prefix = torch.zeros(b, 0, dtype=torch.long, device=dev)
        token_logp = []
        for level in range(depth):
            counts = index.child_counts(prefix).to(dev)
            same = (chosen[:, :, :level] == prefix.unsqueeze(1)).all(-1).long()  # (B, slots so far)
            remaining = counts.scatter_add(1, chosen[:, :, level], -same)
            raw = policy.heads[level](context)
            trie_logits = raw.masked_fill(counts <= 0, NEG)
            u = torch.rand(raw.shape, generator=generator, device=dev).clamp_(1e-10, 1 - 1e-10)
            token = (raw.masked_fill(remaining <= 0, NEG) - torch.log(-torch.log(u))).argmax(-1)
            token_logp.append(trie_logits.log_softmax(-1).gather(1, token[:, None]).squeeze(1))
            context = policy.next_context(level, context, token, trie_logits)
            prefix = torch.cat([prefix, token[:, None]], dim=1)
        chosen = torch.cat([chosen, prefix.unsqueeze(1)], dim=1)
        logps.append(torch.stack(token_logp, dim=1))
    items = index.item_of(chosen.reshape(-1, depth)).view(b, k).to(dev)
    return items, chosen, torch.stack(logps, dim=1)


@torch.no_grad()
def score_all(policy: Any, index: Any, state: torch.Tensor) -> torch.Tensor:
    """log pi(SID_i | s) for every item index (B, N), inactive items included (mask them yourself)."""
    codes = torch.as_tensor(index.codes, device=state.device)  # (N, D)
    b, n = state.shape[0], codes.shape[0]
    context = state.unsqueeze(1).expand(b, n, -1)
    total = torch.zeros(b, n, device=state.device)
    for level in range(codes.shape[1]):
        valid = index.child_counts(codes[:, :level]).to(state.device) > 0  # (N, V)
        logits = policy.logits(level, context, valid.unsqueeze(0))
        tok = codes[:, level].expand(b, n)
        total = total + logits.log_softmax(-1).gather(2, tok[..., None]).squeeze(-1)
        context = policy.next_context(level, context, tok, logits)
    return total
