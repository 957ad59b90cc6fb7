"""The state encoder shared by every learned agent (DESIGN §7).

A SASRec-style transformer over the user's recent history. Each history entry is represented by the
item's *features* (never a per-id embedding, so items added after training need nothing new) plus an
embedding of its feedback (clicked or not: DESIGN §4 keeps the feedback in the state). A user token
built from the profile and the running click rate is prepended; it is never masked, so users with an
empty history still get a state, and its output is the state vector.
"""

from __future__ import annotations

import torch
from torch import nn

from hsrl.simulator.observation import Observation


class StateEncoder(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        profile_dim: int,
        history_length: int,
        dim: int = 32,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.item_map = nn.Sequential(nn.Linear(feature_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.feedback_emb = nn.Embedding(2, dim)
        self.position_emb = nn.Embedding(history_length + 1, dim)
        # user token: profile (may be empty) + running click rate + share of history that is real
        self.user_map = nn.Sequential(nn.Linear(profile_dim + 2, dim), nn.GELU(), nn.Linear(dim, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.LayerNorm(dim)

    def item_vectors(self, item_features: torch.Tensor) -> torch.Tensor:
        """Map item features (..., F) to the encoder's item space (..., dim)."""
        return self.item_map(item_features)

    def forward(self, obs: Observation, item_features: torch.Tensor) -> torch.Tensor:
        """State vectors (B, dim) for a batch of observations, given the catalogue's feature table."""
        mask = obs.hist_mask  # (B, H) True = real
        feats = item_features[obs.hist_items.clamp_min(0)]
        fb = (obs.hist_feedback > 0.5).long()
        h = self.item_map(feats) + self.feedback_emb(fb)
        n_real = mask.sum(1, keepdim=True).clamp_min(1)
        click_rate = (obs.hist_feedback * mask).sum(1, keepdim=True) / n_real
        fill = mask.float().mean(1, keepdim=True)
        user = self.user_map(torch.cat([obs.profile, click_rate, fill], dim=1)).unsqueeze(1)
        seq = torch.cat([h, user], dim=1)  # user token last (most recent position)
        positions = torch.arange(seq.shape[1], device=seq.device)
        seq = seq + self.position_emb(positions)
        pad = torch.cat([~mask, torch.zeros_like(mask[:, :1])], dim=1)
        out = self.transformer(seq, src_key_padding_mask=pad)
        return self.out(out[:, -1])
