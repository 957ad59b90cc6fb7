"""Slate decoding latency at catalogue scale: HSRL trie beam search vs scoring every item (DESIGN §7, §11).

    .venv/bin/python bench/decode.py [--sizes 10000 100000 1000000 --batch 32 --threads 1]

For each catalogue size N: synthetic clustered item features, a Semantic ID index (L = 3, V = 256,
cached under bench/results/), one untrained HSRLAgent (same seed; its exposure coefficients drawn non-zero,
as a trained policy's are), one batch of user states. Both
decoders run on the SAME weights and states: ``HSRLAgent._beam_slate`` (trie beam, decode="trie") and
``HSRLAgent._score_all`` + top-K (decode="score_all", the reference's O(N·L) path). score_all
materialises (users, N, V) logits per level (32 GB at N = 10^6, 32 users), so it runs in user chunks
of at most --score-all-cells users × items and its latency is the sum over chunks. Chunks are
independent, so its cost is linear in the users; at N >= --score-all-subset-from it is timed on the first
--score-all-users users only (a full batch would take ~20 min on 2 shared cores): the table then shows
that measured time and, marked "extrapolated", the batch figure per-user × batch. The "measured bound"
compares trie beam on the full batch with score_all on that subset alone. Also reported:
end-to-end ``act`` (encoder + trie decoding), the share of the beam slate that is in score_all's exact
top-K, and a breakdown of the beam's time (trie lookups vs network) to show where it goes.
Prints a table and writes bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sid_build import clustered  # bench/ is on sys.path when a bench script runs

from hsrl.agents import HSRLAgent
from hsrl.config import AgentConfig
from hsrl.data.schema import PAD
from hsrl.sid.index import SemanticIDIndex
from hsrl.simulator.observation import Observation

RESULTS = Path(__file__).resolve().parent / "results"


def catalogue(n: int, dim: int, levels: int, codes: int) -> tuple[np.ndarray, SemanticIDIndex, float]:
    """Features and index for N items; the index is cached (building at 10^6 takes ~40 s)."""
    features = clustered(n, dim, max(10, n // 1000), np.random.default_rng(n))
    path = RESULTS / f"decode_index_{n}_{dim}_{levels}_{codes}.npz"
    start = time.perf_counter()
    if path.is_file():
        index = SemanticIDIndex.load(path)
    else:
        index = SemanticIDIndex.build(features, levels=levels, codes=codes, seed=0, kmeans_iters=10)
        index.save(path)
    return features, index, time.perf_counter() - start


def trained_like(policy: torch.nn.Module, seed: int = 0) -> None:
    """Give an untrained policy non-zero exposure coefficients, as training does: at zero (their
    initial value) the decoder skips the similar-code spread, which would flatter the timings."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in getattr(policy, "exposure_coef", []):
            layer.weight.normal_(0.0, 0.5, generator=g)
            layer.bias.normal_(0.0, 1.0, generator=g)


def observations(n_items: int, batch: int, history: int, profile_dim: int) -> Observation:
    g = torch.Generator().manual_seed(0)
    hist = torch.randint(0, n_items, (batch, history), generator=g)
    lengths = torch.randint(1, history + 1, (batch,), generator=g)
    hist[torch.arange(history)[None, :] < (history - lengths)[:, None]] = PAD
    feedback = (torch.rand(batch, history, generator=g) < 0.3).float() * (hist != PAD)
    return Observation(
        torch.zeros(batch, dtype=torch.long), torch.randn(batch, profile_dim, generator=g), hist, feedback
    )


def timed(fn, repeats: int) -> tuple[list[float], object]:
    out, times = None, []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times, out


def beam_breakdown(agent: HSRLAgent, state: torch.Tensor, obs, repeats: int) -> dict[str, float]:
    """Median ms per beam call spent in trie lookups (child_counts, item_of) vs everything else."""
    index = agent.index
    calls = {"child_counts": 0.0, "item_of": 0.0}
    originals = {name: getattr(index, name) for name in calls}

    def wrap(name):
        def inner(*args, **kwargs):
            start = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                calls[name] += (time.perf_counter() - start) * 1e3

        return inner

    for name in calls:
        setattr(index, name, wrap(name))
    try:
        totals = []
        for _ in range(repeats):
            start = time.perf_counter()
            agent._beam_slate(state, obs)
            totals.append((time.perf_counter() - start) * 1e3)
    finally:
        for name in calls:
            delattr(index, name)
    total = sum(totals) / repeats
    trie = {k: v / repeats for k, v in calls.items()}
    return {**trie, "network_and_topk": total - sum(trie.values()), "total": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=32, help="item feature dimension")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codes", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--beam", type=int, default=16)
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=20, help="timed trie calls per size")
    ap.add_argument("--score-all-repeats", type=int, default=3, help="timed score_all passes at N <= 10^4 (else 1)")
    ap.add_argument(
        "--score-all-subset-from", type=int, default=1_000_000, help="N from which score_all runs on a user subset"
    )
    ap.add_argument("--score-all-users", type=int, default=4, help="users in that subset")
    ap.add_argument("--score-all-cells", type=int, default=250_000, help="users x items per score_all chunk")
    ap.add_argument("--naive-up-to", type=int, default=10_000, help="largest N at which the naive score_all is timed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-exposure", action="store_true", help="policy without the per-branch exposure features")
    ap.add_argument("--out", type=Path, default=RESULTS / "decode.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = []
    for n in args.sizes:
        features, index, index_seconds = catalogue(n, args.dim, args.levels, args.codes)
        feats = torch.from_numpy(features)
        cfg = AgentConfig(dropout=0.0, beam=args.beam, exposure=not args.no_exposure)
        agent = HSRLAgent(feats, args.k, index, profile_dim=8, history_length=args.history, config=cfg, seed=0)
        agent.train_mode(False)
        trained_like(agent.net.policy)
        obs = observations(n, args.batch, args.history, 8)
        with torch.no_grad():
            state = agent.net.encoder(obs, feats)
            agent._beam_slate(state, obs)  # warm: trie tables, allocator
            trie_ms, beam_items = timed(lambda: agent._beam_slate(state, obs), args.repeats)
            act_ms, _ = timed(lambda: agent.act(obs), max(3, args.repeats // 4))
            breakdown = beam_breakdown(agent, state, obs, max(3, args.repeats // 4))
            users = args.batch if n < args.score_all_subset_from else min(args.batch, args.score_all_users)
            chunk = max(1, min(users, args.score_all_cells // n))

            def score_all() -> torch.Tensor:
                parts = []
                for lo in range(0, users, chunk):
                    rows = slice(lo, min(lo + chunk, users))
                    parts.append(agent._score_all(state[rows], obs.index(rows)).topk(args.k, dim=1).indices)
                return torch.cat(parts)

            repeats = args.score_all_repeats if n <= 10_000 else 1
            all_ms, exact = timed(score_all, repeats)
            naive_ms = None
            if n <= args.naive_up_to:
                from hsrl.agents.decoding import score_all_naive

                naive_chunk = max(1, min(args.batch, args.score_all_cells // n))
                naive = lambda: [
                    score_all_naive(
                        agent.net.policy,
                        index,
                        state[lo : lo + naive_chunk],
                        agent.items(),
                        agent.recent(obs.index(slice(lo, lo + naive_chunk))),
                    )
                    for lo in range(0, args.batch, naive_chunk)
                ]
                naive_ms = statistics.median(timed(naive, 1)[0])
        assert (beam_items >= 0).all() and all(len(set(r.tolist())) == args.k for r in beam_items)
        overlap = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / args.k for a, b in zip(beam_items, exact)]))
        measured = statistics.median(all_ms)
        batch_ms = measured * args.batch / users
        row = {
            "items": n,
            "vocab_sizes": index.vocab_sizes,
            "index_load_or_build_s": index_seconds,
            "trie_beam_ms": {
                "median": statistics.median(trie_ms),
                "min": min(trie_ms),
                "p90": float(np.percentile(trie_ms, 90)),
            },
            "act_trie_ms_median": statistics.median(act_ms),
            "score_all_ms": {
                "median": measured,
                "min": min(all_ms),
                "runs": len(all_ms),
                "users": users,
                "user_chunk": chunk,
            },
            "score_all_batch_ms": batch_ms,
            "score_all_batch_extrapolated": users < args.batch,
            "speedup_median": batch_ms / statistics.median(trie_ms),
            "speedup_measured_bound": measured / statistics.median(trie_ms),
            "beam_in_exact_topk": overlap,
            "score_all_naive_batch_ms": naive_ms,
            "beam_breakdown_ms": breakdown,
        }
        rows.append(row)
        print(
            f"N={n:>9,}  trie {row['trie_beam_ms']['median']:8.2f} ms ({args.batch} users)"
            f"  score_all {measured:10.1f} ms"
            f" ({users} users)  x{row['speedup_median']:8.0f}  (overlap {overlap:.2f})",
            flush=True,
        )
        del agent, index, features, feats
    base = rows[0]["trie_beam_ms"]["median"]
    print()
    print(
        f"slate decoding, batch {args.batch} users, K={args.k}, beam {args.beam}, L={args.levels}, V={args.codes},"
        f" torch threads {args.threads}"
    )
    print(
        f"{'items':>10} {'trie ms':>8} {'vs first':>8} {'act ms':>7} {'score_all ms (users)':>21} {'batch ms':>11}"
        f" {'speedup':>8} {'bound':>7} {'beam∩exact':>10} {'lookups ms':>10} {'net+topk':>8}"
    )
    for r in rows:
        b, s = r["beam_breakdown_ms"], r["score_all_ms"]
        batch = f"{r['score_all_batch_ms']:.0f}{'*' if r['score_all_batch_extrapolated'] else ''}"
        print(
            f"{r['items']:>10,} {r['trie_beam_ms']['median']:>8.2f} {r['trie_beam_ms']['median'] / base:>8.2f}"
            f" {r['act_trie_ms_median']:>7.2f} {s['median']:>15.0f} ({s['users']:>2}) {batch:>11}"
            f" {r['speedup_median']:>8.0f} {r['speedup_measured_bound']:>7.0f} {r['beam_in_exact_topk']:>10.2f}"
            f" {b['child_counts'] + b['item_of']:>10.2f}"
            f" {b['network_and_topk']:>8.2f}"
        )
    for r in rows:
        if r["score_all_naive_batch_ms"] is not None:
            print(
                f"naive score_all (policy recomputed per item) at N={r['items']:,}:"
                f" {r['score_all_naive_batch_ms']:.0f} ms"
                f" for the batch, x{r['score_all_naive_batch_ms'] / r['score_all_batch_ms']:.1f} the shared-prefix one"
                " (not in the speedup column)"
            )
    print(
        "* extrapolated from the measured users (score_all cost is linear in users); 'bound' = measured score_all"
        " time on its users / trie time on the whole batch"
    )
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "rows": rows,
        "trie_ratio_largest_vs_smallest": rows[-1]["trie_beam_ms"]["median"] / base,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nload average before {load_before[0]:.2f}, after {result['load_average_after'][0]:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
