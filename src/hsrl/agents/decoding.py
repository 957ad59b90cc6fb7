"""Decoding slates from a hierarchical SID policy over the trie (DESIGN §7), shared by the HSRL agent
and the service.

* ``beam_search``: the k best complete SIDs by joint log-probability; cost O(D · beam · V), independent
  of the catalogue size.
* ``sample_slate``: k distinct SIDs sampled without replacement: a branch stays open while it holds
  active items not yet placed in the row's slate (trie child counts minus the slate so far). The
  log-probabilities returned are under the trie mask alone, the same mask the learner recomputes.
* ``score_all``: log pi(SID_i | s) for every catalogue item, the reference's O(N · D) path (one
  distribution per distinct prefix; ``score_all_naive`` recomputes it per item).

``items`` (an ``ItemTable``) is needed by semantic token heads, which score the last level's tokens by
the features of the items behind them; free heads ignore it. ``recent`` (a ``RecentExposure``) gives
exposure-aware heads, per branch of the trie, how much of it the user was just shown and clicked.

The decoders read the index through ``hsrl.sid.protocols.SIDTrie`` and the policy through ``SIDPolicy``
(below; ``HierarchicalPolicy`` implements it); ``SIDActor`` is a state encoder with such a policy, what
the service decodes with (the training actor or the export's ``PolicyNet``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from hsrl.agents.base import NEG

if TYPE_CHECKING:
    from hsrl.agents.encoder import StateEncoder
    from hsrl.agents.hsrl import ItemTable
    from hsrl.sid.protocols import SIDTrie
    from hsrl.simulator.observation import Observation


class SIDPolicy(Protocol):
    """What decoding needs of a hierarchical policy over SID tokens: per-level logits from a context,
    and the next level's context from the chosen tokens. Shapes: context (..., dim), valid (..., V)."""

    @property
    def vocab_sizes(self) -> list[int]:
        """Tokens per level (the index's ``vocab_sizes``; its length is the SID depth)."""
        ...

    @property
    def residual(self) -> str:
        """``hard`` or ``soft`` (``next_context`` subtracts the probability-weighted embedding: needs ``logits``)."""
        ...

    @property
    def semantic(self) -> bool:
        """The last level's logits read the items behind the prefix (``children`` and ``items``)."""
        ...

    @property
    def exposure(self) -> bool:
        """The logits read the user's recent exposure per branch (a ``BranchExposure``)."""
        ...

    def raw_logits(
        self,
        level: int,
        context: torch.Tensor,
        children: torch.Tensor | None = None,
        items: ItemTable | None = None,
        exposure: Exposure | None = None,
    ) -> torch.Tensor:
        """Unmasked next-token logits (..., V)."""
        ...

    def logits(
        self,
        level: int,
        context: torch.Tensor,
        valid: torch.Tensor,
        children: torch.Tensor | None = None,
        items: ItemTable | None = None,
        exposure: Exposure | None = None,
    ) -> torch.Tensor:
        """``raw_logits`` with the tokens outside ``valid`` at NEG."""
        ...

    def next_context(
        self,
        level: int,
        context: torch.Tensor,
        tokens: torch.Tensor,
        logits: torch.Tensor | None = None,
        children: torch.Tensor | None = None,
        items: ItemTable | None = None,
    ) -> torch.Tensor:
        """The context (..., dim) below the chosen ``tokens`` (...)."""
        ...


class SIDActor(Protocol):
    """A state encoder and the SID policy on top of it (``HSRLAgent.net``, the export's ``PolicyNet``)."""

    @property
    def encoder(self) -> StateEncoder: ...

    @property
    def policy(self) -> SIDPolicy: ...


class RecentExposure:
    """The SIDs of a user's most recent history entries, for per-branch exposure counts.

    Fatigue (a user who was just shown a topic skips it now) is a property of trie branches: the share of
    the previous slate, and of the last ``slates`` slates, that fell under a prefix, and how much of it
    was clicked. The counts are read from the observation and the frozen SIDs, so they work for any item.
    """

    FEATURES = 4  # shown in the last slate, shown in the last `slates` slates, and the same clicked

    def __init__(self, codes: torch.Tensor, weights: torch.Tensor, items: torch.Tensor | None = None) -> None:
        self.codes = codes  # (B, W, D) SIDs of the last W history entries (0 where padded)
        self.weights = weights  # (B, W, F) feature weight of each entry (0 where padded)
        self.items = items  # (B, W) their item indices (0 where padded), for ``rows``

    @classmethod
    def from_obs(cls, obs: Observation, index: SIDTrie, slate_size: int, slates: int = 3) -> RecentExposure:
        window = min(slates * slate_size, obs.hist_items.shape[1])
        hist = obs.hist_items[:, -window:]
        real = (hist >= 0).float()
        codes = index.sid_of(hist.clamp_min(0))
        last = (torch.arange(window, device=hist.device) >= window - slate_size).float().expand_as(real)
        clicked = (obs.hist_feedback[:, -window:] > 0.5).float()
        weights = torch.stack([last, torch.ones_like(last), last * clicked, clicked], -1) * real[..., None]
        return cls(codes, weights / slate_size, hist.clamp_min(0))

    def rows(self, row_of: torch.Tensor, child_of: torch.Tensor) -> RowExposure:
        """The entries as seen from *every* distinct prefix of a level at once (``score_all``): each entry
        lies under one prefix row, ``row_of[item]``, as child ``child_of[item]`` (both (N,), per item).
        O(B * W) where ``branches`` over P prefix rows is O(B * P * W): at the synthetic default's 287
        third-level prefixes, a 128-state ``score_all`` with its backward took 0.07 s instead of 0.17 (side
        by side, one thread)."""
        assert self.items is not None, "rows needs the entries' item indices (RecentExposure.from_obs)"
        return RowExposure(row_of[self.items], child_of[self.items], self.weights)

    def branches(self, prefix: torch.Tensor) -> BranchExposure:
        """For prefixes (B, R, l), R rows per user (1 where all users share them): the child token each
        recent entry falls under and its weights, zero for entries outside the prefix. Kept sparse (W
        entries, not V children): the policy contracts the weights with its coefficients first and
        scatters W scalars per row. Broadcast per user rather than gathered per row (the decoders' rows
        are grouped by user)."""
        level = prefix.shape[-1]
        codes = self.codes[:, None, :, : level + 1]  # (B, 1, W, l + 1): only the columns needed
        under = (codes[..., :level] == prefix[:, :, None, :]).all(-1)  # (B, R, W)
        weight = self.weights[:, None] * under[..., None]
        return BranchExposure(codes[..., level].expand(under.shape), weight)


class BranchExposure:
    """Recent entries as seen from M prefix rows: ``child`` (..., W) the child token of the prefix that each
    entry falls under, ``weight`` (..., W, F) its feature weights (0 when it is not under the prefix)."""

    def __init__(self, child: torch.Tensor, weight: torch.Tensor) -> None:
        self.child, self.weight = child, weight

    def view(self, *lead: int) -> BranchExposure:
        return BranchExposure(
            self.child.reshape(*lead, self.child.shape[-1]), self.weight.reshape(*lead, *self.weight.shape[-2:])
        )

    def dense(self, vocab: int) -> torch.Tensor:
        """(..., vocab, F): the weighted count of recent entries under every child (the features' meaning)."""
        out = torch.zeros(*self.child.shape[:-1], vocab, self.weight.shape[-1], device=self.weight.device)
        return out.scatter_add_(-2, self.child[..., None].expand_as(self.weight), self.weight)

    def add_to(self, logits: torch.Tensor, coef: torch.Tensor, spread: torch.Tensor | None = None) -> torch.Tensor:
        """Add sum_f coef_f * dense[..., v, f] into ``logits`` (..., V) in place (a head's fresh output, which
        no backward pass reads) and return it, without the dense tensor.

        Without ``spread`` the coefficients are (..., F). With ``spread`` (V, V) they are (..., 2F): the first
        F weigh the counts, the last F the counts times ``spread`` (exposure to a similar code), computed
        only for rows with an entry under their prefix (few below level 1: the beam's rows are every
        user's open branches). Each entry's weights are contracted with its row's coefficients first and
        the W scalars scattered into the logits (at V = 256, 16 users x 32 rows: 0.9 -> 0.4 ms per level
        against two dense scatters and a full-width spread)."""
        f = self.weight.shape[-1]
        parts = coef.unflatten(-1, (-1, f))  # (..., 1 or 2, F)
        per_entry = self.weight @ parts.transpose(-1, -2)  # (..., W, 1 or 2)
        out = logits.scatter_add_(-1, self.child, per_entry[..., 0])
        if spread is None:
            return out
        vocab = logits.shape[-1]
        flat_child, flat_weight = self.child.flatten(0, -2), per_entry[..., 1].flatten(0, -2)
        live = (flat_weight != 0).any(-1).nonzero().squeeze(-1)
        if not live.numel():
            return out
        counts = torch.zeros(live.numel(), vocab, device=logits.device, dtype=logits.dtype)
        counts.scatter_add_(-1, flat_child[live], flat_weight[live])
        return out.view(-1, vocab).index_add_(0, live, counts @ spread).view_as(out)


class RowExposure:
    """Recent entries placed under their own prefix row (``RecentExposure.rows``): ``row`` and ``child``
    (B, W), ``weight`` (B, W, F). Adds to logits (B, P, V) over all P prefix rows exactly what a
    ``BranchExposure`` of those P rows adds, without a (B, P, W) comparison."""

    def __init__(self, row: torch.Tensor, child: torch.Tensor, weight: torch.Tensor) -> None:
        self.row, self.child, self.weight = row, child, weight

    def add_to(self, logits: torch.Tensor, coef: torch.Tensor, spread: torch.Tensor | None = None) -> torch.Tensor:
        """As ``BranchExposure.add_to``, for logits (B, P, V) and coefficients (B, P, F or 2F)."""
        b, p, vocab = logits.shape
        f = self.weight.shape[-1]
        own = coef.gather(1, self.row[..., None].expand(-1, -1, coef.shape[-1]))  # (B, W, kF): its row's
        per_entry = (own.unflatten(-1, (-1, f)) * self.weight[:, :, None]).sum(-1)  # (B, W, k)
        flat = logits.view(b, p * vocab)
        flat.scatter_add_(1, self.row * vocab + self.child, per_entry[..., 0])
        if spread is not None:
            rows = (self.row + p * torch.arange(b, device=logits.device)[:, None]).flatten()  # (B W) rows of B P
            flat.view(b * p, vocab).index_add_(0, rows, (per_entry[..., 1, None] * spread[self.child]).flatten(0, 1))
        return logits


Exposure = BranchExposure | RowExposure  # what a policy's logits add: the same counts, two layouts


def level_exposure(
    policy: SIDPolicy, recent: RecentExposure | None, level: int, prefix: torch.Tensor
) -> BranchExposure | None:
    """Exposure of every child of the prefixes (B, R, level) (R rows per user, or 1 shared by all), with
    leading shape (B, R); None when the policy reads none. Shared by the decoders and the learner's
    teacher-forced pass, so both see the same logits."""
    if recent is None or not policy.exposure:
        return None
    return recent.branches(prefix)


def level_children(policy: SIDPolicy, index: SIDTrie, level: int, prefix: torch.Tensor) -> torch.Tensor | None:
    """(M, D) item indices behind the last level's tokens (semantic heads only; None elsewhere)."""
    if policy.semantic and level == len(policy.vocab_sizes) - 1:
        return index.child_items(prefix).to(prefix.device)
    return None


@torch.no_grad()
def beam_search(
    policy: SIDPolicy,
    index: SIDTrie,
    state: torch.Tensor,
    k: int,
    beam: int,
    items: ItemTable | None = None,
    recent: RecentExposure | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
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
        flat_prefix = prefix.reshape(b * w, level)
        valid = index.valid_next(flat_prefix).to(dev)
        children = level_children(policy, index, level, flat_prefix)
        exposure = level_exposure(policy, recent, level, prefix)
        exposure = None if exposure is None else exposure.view(b * w)
        logits = policy.logits(level, context.reshape(b * w, dim), valid, children, items, exposure)  # invalid: NEG
        vocab = logits.shape[-1]
        total = (score.reshape(b * w, 1) + logits.log_softmax(-1)).reshape(b, w * vocab)
        score, flat = total.topk(min(width if level < depth - 1 else k, w * vocab), dim=1)
        parent, token = flat // vocab, flat % vocab
        prefix = torch.cat([prefix.gather(1, parent[..., None].expand(-1, -1, level)), token[..., None]], dim=2)
        parent_ctx = context.gather(1, parent[..., None].expand(-1, -1, dim))
        parent_logits = parent_children = None
        if policy.residual == "soft":  # only the soft residual needs the parent's distribution
            parent_logits = logits.reshape(b, w, vocab).gather(1, parent[..., None].expand(-1, -1, vocab))
        if children is not None:
            parent_children = children.reshape(b, w, vocab).gather(1, parent[..., None].expand(-1, -1, vocab))
        context = policy.next_context(level, parent_ctx, token, parent_logits, parent_children, items)
    return index.item_of(prefix.reshape(-1, depth)).view(b, -1).to(dev), score


@torch.no_grad()
def sample_slate(
    policy: SIDPolicy,
    index: SIDTrie,
    state: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    items: ItemTable | None = None,
    recent: RecentExposure | None = None,
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
            children = level_children(policy, index, level, prefix)
            exposure = level_exposure(policy, recent, level, prefix[:, None])
            exposure = None if exposure is None else exposure.view(b)
            raw = policy.raw_logits(level, context, children, items, exposure)
            trie_logits = raw.masked_fill(counts <= 0, NEG)
            u = torch.rand(raw.shape, generator=generator, device=dev).clamp_(1e-10, 1 - 1e-10)
            token = (raw.masked_fill(remaining <= 0, NEG) - torch.log(-torch.log(u))).argmax(-1)
            token_logp.append(trie_logits.log_softmax(-1).gather(1, token[:, None]).squeeze(1))
            context = policy.next_context(level, context, token, trie_logits, children, items)
            prefix = torch.cat([prefix, token[:, None]], dim=1)
        chosen = torch.cat([chosen, prefix.unsqueeze(1)], dim=1)
        logps.append(torch.stack(token_logp, dim=1))
    return index.item_of(chosen.reshape(-1, depth)).view(b, k).to(dev), chosen, torch.stack(logps, dim=1)


def score_all(
    policy: SIDPolicy,
    index: SIDTrie,
    state: torch.Tensor,
    items: ItemTable | None = None,
    recent: RecentExposure | None = None,
) -> torch.Tensor:
    """log pi(SID_i | s) for every item index (B, N), inactive items included (mask them yourself).

    The reference's path done as it should be: one distribution per user per *distinct* prefix and level
    (the hard residual makes the context a function of the prefix), then each item's score gathered from
    its tokens' log-probabilities, O(N · L) gathers. Equal to ``score_all_naive`` (tested). Differentiable
    (``distill`` trains through it): call it under ``torch.no_grad()`` to decode."""
    codes = torch.as_tensor(index.codes, device=state.device)  # (N, D)
    b, n = state.shape[0], codes.shape[0]
    depth = codes.shape[1]
    total = torch.zeros(b, n, device=state.device)
    prefixes = codes[:1, :0]  # (P, level) distinct prefixes; one empty prefix at level 0
    row_of = torch.zeros(n, dtype=torch.long, device=state.device)  # item -> its prefix's row
    context = state.unsqueeze(1)  # (B, P, dim)
    for level in range(depth):
        valid = index.valid_next(prefixes).to(state.device)  # (P, V)
        children = level_children(policy, index, level, prefixes)
        exposure = recent.rows(row_of, codes[:, level]) if recent is not None and policy.exposure else None
        logits = policy.logits(level, context, valid.unsqueeze(0), children, items, exposure)  # (B, P, V)
        log_prob = logits.log_softmax(-1)
        total += log_prob[:, row_of, codes[:, level]]
        if level == depth - 1:
            break
        deeper, deeper_row = torch.unique(codes[:, : level + 1], dim=0, return_inverse=True)
        parent = torch.empty(deeper.shape[0], dtype=torch.long, device=state.device).scatter_(0, deeper_row, row_of)
        tokens = deeper[:, level].expand(b, -1)
        context = policy.next_context(level, context[:, parent], tokens, logits[:, parent], None, items)
        prefixes, row_of = deeper, deeper_row
    return total


@torch.no_grad()
def score_all_naive(
    policy: SIDPolicy,
    index: SIDTrie,
    state: torch.Tensor,
    items: ItemTable | None = None,
    recent: RecentExposure | None = None,
) -> torch.Tensor:
    """``score_all`` recomputing the policy for every item (B × N contexts per level): the check that the
    shared-prefix version is exact, and the slow baseline bench/decode.py keeps out of its headline."""
    codes = torch.as_tensor(index.codes, device=state.device)  # (N, D)
    b, n = state.shape[0], codes.shape[0]
    context = state.unsqueeze(1).expand(b, n, -1)
    total = torch.zeros(b, n, device=state.device)
    for level in range(codes.shape[1]):
        valid = index.valid_next(codes[:, :level]).to(state.device)  # (N, V)
        children = level_children(policy, index, level, codes[:, :level])
        exposure = level_exposure(policy, recent, level, codes[None, :, :level])  # (B, N) rows
        logits = policy.logits(level, context, valid.unsqueeze(0), children, items, exposure)
        tok = codes[:, level].expand(b, n)
        total = total + logits.log_softmax(-1).gather(2, tok[..., None]).squeeze(-1)
        context = policy.next_context(level, context, tok, logits, children, items)
    return total
