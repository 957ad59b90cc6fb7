"""The training simulator as a model an agent may query while it learns (never the judge or the true world).

GRPO scores its sampled slates by their expected reward under this model; HSRL (and the other agents it
applies to, ``distill``) may read its click probabilities of every item as a per-item teacher. Both come from
``training_click_model``, which checks that the environment is the run's TRAINING simulator, so no agent can
learn from the world or the judge that score it. The model is never saved with an agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from hsrl.data.schema import PAD
from hsrl.errors import ConfigError
from hsrl.simulator.observation import Observation
from hsrl.simulator.reward import REWARDS, RewardFn

if TYPE_CHECKING:
    from hsrl.simulator.catalogue import CatalogueView
    from hsrl.simulator.env import SlateEnv

ClickProbs = Callable[[Observation, torch.Tensor, torch.Tensor | None], torch.Tensor]


def click_count_pmf(probs: torch.Tensor) -> torch.Tensor:
    """P(S = s), s = 0..K (B, K+1), of the number of clicks S on a slate whose K slots are clicked
    independently with probabilities ``probs`` (B, K): the Poisson-binomial distribution, by convolution."""
    pmf = torch.zeros(*probs.shape[:-1], probs.shape[-1] + 1, dtype=probs.dtype, device=probs.device)
    pmf[..., 0] = 1.0
    for k in range(probs.shape[-1]):
        p = probs[..., k : k + 1]
        pmf = pmf * (1 - p) + torch.cat([torch.zeros_like(p), pmf[..., :-1]], -1) * p
    return pmf


class ExpectedReward:
    """E[reward | state, slate] under a click model, for rewards that depend on the clicks' count only
    (``mean_with_cost`` and ``sweet_point``: both are functions of the mean over slots). ``click_probs``:
    the response model's (obs, slate (B, W), slots (W,)) -> (B, W) probabilities, each column scored at its
    slot; ``reward_fn``: the environment's own reward on 0/1 clicks.

    For ``mean_with_cost`` this is mean_k(p_k - cost * (1 - p_k)); for ``sweet_point`` (1 - |mean - target|
    of the click count's mean reward) it is the same sum over the count's exact distribution."""

    def __init__(self, click_probs: ClickProbs, reward_fn: RewardFn, slate_size: int) -> None:
        self.click_probs = click_probs
        self.reward_fn = reward_fn
        k = int(slate_size)
        # row s: a slate with s clicks; the reward of each count, computed by the env's own function
        counts = (torch.arange(k).unsqueeze(0) < torch.arange(k + 1).unsqueeze(1)).double()
        self.per_count = reward_fn(counts).double()  # (K+1,)

    @classmethod
    def of_env(cls, env: SlateEnv, agent: str = "grpo") -> ExpectedReward:
        """The expected reward of ``env``'s own click model and reward, UNCHECKED (any world; tests use the
        true one). The registry builds GRPO with ``simulator_reward``, which checks it is the simulator."""
        name = getattr(env, "reward_name", None)
        if name not in REWARDS:
            raise ConfigError(
                f"agent '{agent}' needs the expectation of the reward given click probabilities; the reward "
                f"'{name}' is not one of {', '.join(REWARDS)} (whose value depends on the click count only)"
            )
        return cls(env.response.click_probs, env.reward_fn, int(env.slate_size))

    @torch.no_grad()
    def __call__(self, obs: Observation, slates: torch.Tensor) -> torch.Tensor:
        """Slates (B, K) -> (B,); or G slates per state (B, G, K) -> (B, G), scored in one call of the
        click model per state (one wide slate, every column at its own slot). In float64: two orders of the
        same items must not differ by float32 rounding, which group normalisation would blow up."""
        b, k = slates.shape[0], slates.shape[-1]
        flat = slates.reshape(b, -1)
        slots = torch.arange(k, device=slates.device).repeat(flat.shape[1] // k)
        probs = self.click_probs(obs, flat, slots).view(slates.shape).double().clamp(0.0, 1.0)
        return click_count_pmf(probs) @ self.per_count.to(probs.device)


def _through_view(click_probs: ClickProbs, order: torch.Tensor) -> ClickProbs:
    """A world's click model asked about a ``CatalogueView``'s item indices (item i of the view is world
    item ``order[i]``). History entries the view hides read as padding to the model too."""

    def probs(obs: Observation, slate: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        hist = torch.where(obs.hist_items == PAD, PAD, order[obs.hist_items.clamp_min(0)])
        return click_probs(Observation(obs.user, obs.profile, hist, obs.hist_feedback), order[slate], slots)

    return probs


def training_click_model(
    env: SlateEnv | CatalogueView, training_simulator: Callable[..., Any] | None = None, agent: str = "grpo"
) -> tuple[SlateEnv, ClickProbs]:
    """The click model of ``agent``'s training environment (named in the errors), checked to be the
    TRAINING simulator, asked in ``env``'s item indices; and the underlying ``SlateEnv``.

    ``env`` is what the factory receives (``BuildContext.env``): a ``SlateEnv`` of the training split, or
    a ``CatalogueView`` of one (catalogue churn). Its response must be a learned ``UserResponseModel``
    (the true synthetic world would hand the agent the ground truth it is judged by) and, given the run's
    ``training_simulator`` (called as ``training_simulator(device=...)``, e.g. ``RunDir(run).simulator``),
    that model itself, not the judge (a second simulator that agents are scored in and must never learn
    from)."""
    from hsrl.simulator.catalogue import CatalogueView
    from hsrl.simulator.response import UserResponseModel

    base, order = (env.env, env.order) if isinstance(env, CatalogueView) else (env, None)
    response = getattr(base, "response", None)
    if not isinstance(response, UserResponseModel):
        raise ConfigError(
            f"agent '{agent}' learns from the training simulator's click model, and this environment "
            f"answers with {type(response).__name__} (the true world, or no learned simulator): "
            "train it in the run's simulator (env.world=simulator)"
        )
    if getattr(base, "split", "train") != "train":
        raise ConfigError(f"agent '{agent}' learns in the training users' simulator, not the '{base.split}' split")
    if training_simulator is not None and response is not training_simulator(device=base.device):
        raise ConfigError(
            f"agent '{agent}': the environment's click model is not the run's training simulator "
            "(the judge, or another model); build it on `SlateEnv.from_run(run, split='train')`"
        )
    return base, (response.click_probs if order is None else _through_view(response.click_probs, order))


def simulator_reward(
    env: SlateEnv | CatalogueView, training_simulator: Callable[..., Any] | None = None, agent: str = "grpo"
) -> ExpectedReward:
    """GRPO's reward model: the expected reward under ``training_click_model`` (same checks). Only the click
    model and the reward function are kept."""
    base, click_probs = training_click_model(env, training_simulator, agent)
    model = ExpectedReward.of_env(base, agent)
    model.click_probs = click_probs
    return model


@torch.no_grad()
def every_item_click_probs(click_probs: ClickProbs, obs: Observation, n_items: int, chunk: int = 4096) -> torch.Tensor:
    """(B, N) click probability of every catalogue item for each state, each as if shown in the first slot
    (where a world has position effects, the best item then goes to the most looked-at slot). In chunks of
    items, so a large catalogue never needs one (B, N) slate at once inside the click model."""
    items = torch.arange(n_items, device=obs.device)
    first_slot = torch.zeros(min(chunk, n_items), dtype=torch.long, device=obs.device)
    parts = []
    for start in range(0, n_items, chunk):
        part = items[start : start + chunk].expand(obs.batch_size, -1)
        parts.append(click_probs(obs, part, first_slot[: part.shape[1]]))
    return torch.cat(parts, dim=1)


class ItemTeacher:
    """The training simulator's click model read as a target distribution over the catalogue (``distill``).

    q(i | s) = softmax_i(logit p(click | s, i) / temperature) over the active items: the policy that puts
    its mass where q does ranks items as the simulator's myopic optimum does, in the state the agent saw
    (history included, so the simulator's satiation reaches the policy). The RL terms still decide how far
    from that myopic ranking the long-term return pulls it."""

    def __init__(self, click_probs: ClickProbs, temperature: float, states: int = 0) -> None:
        if temperature <= 0:
            raise ValueError(f"the teacher's temperature must be > 0, not {temperature}")
        self.click_probs = click_probs
        self.temperature = float(temperature)
        self.states = int(states)

    def rows(self, batch_size: int) -> slice:
        """The rows of a replay batch the term reads (``agent.distill_states``; 0 = all): the first, as the
        batch is a random sample, so the agent scores every item in those states only."""
        return slice(0, min(batch_size, self.states) if self.states > 0 else batch_size)

    @torch.no_grad()
    def targets(self, obs: Observation, active: torch.Tensor) -> torch.Tensor:
        """(B, N) target probabilities; exactly zero on inactive items, rows sum to 1."""
        probs = every_item_click_probs(self.click_probs, obs, int(active.shape[0])).clamp(1e-6, 1 - 1e-6)
        logits = torch.logit(probs.float()) / self.temperature
        return logits.masked_fill(~active, float("-inf")).softmax(-1)

    def loss(self, obs: Observation, log_probs: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the agent's log-probabilities over items (B, N) against the targets."""
        q = self.targets(obs, active)
        return -(q * log_probs.masked_fill(~active, 0.0)).sum(-1).mean()
