"""
Where does differential smoothing help? A phase map on toy.py's tabular setting, in seconds on a CPU:

    python toy_map.py     # prints the map; writes assets/toy_map.png and assets/toy_map.json

Each cell of the map is a kind of prompt: K correct answers whose base probabilities are equal ("flat")
or fall by a factor e per rank ("skewed"), and a base accuracy pi(correct) from 2% to 80%. Every cell
holds PER_CELL prompts (tabular softmax over V answers, wrong logits N(0, 1) plus one likely wrong
answer, as in toy.py); all cells train together in one tabular run per method (prompts share nothing).
GRPO, DS-GRPO and the entropy bonus take the same number of steps on the same number of samples (a
matched budget), with the coefficients toy.py uses (DS alpha = 1, beta = 0.1; bonus c = 0.3), and the
map shows, per cell and averaged over SEEDS, the final difference DS - GRPO and DS - bonus in
  pass@1 = pi(correct)  |  pass@16 = 1 - (1 - pi(correct))^16  |  distinct@16 (expected distinct correct
  answers in 16 samples: diversity as a user of pass@k sees it).
Simplified: answers are single tokens (L_i = log pi_old(y_i)), no shared parameters, plain SGD.
"""
import json
import os
import time

import torch
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

import toy

# ----------------------------------------------------------------------------- config
ACCS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)  # base accuracy pi(correct) of a cell's prompts
KINDS = ((1, 0.0), (2, 0.0), (4, 0.0), (8, 0.0), (2, 1.0), (4, 1.0), (8, 1.0))  # (K correct, skew)
PER_CELL = 4  # prompts per cell
STEPS = 200
SEEDS = (0, 1, 2)
DS = (1.0, 0.1)  # alpha, beta
BONUS = 0.3  # c of the entropy bonus
KEYS = ("pass@1", "pass@16", "distinct@16")


def make_map_problem(seed):
    """Logits (P, V) and correctness (P, V) of every cell's prompts, cells in (kind, accuracy) order.
    Correct answer j of a prompt gets logit -skew * j + N(0, 0.1^2), then all correct logits are shifted
    so that the correct mass is exactly the cell's accuracy."""
    g = torch.Generator().manual_seed(seed)
    P = len(KINDS) * len(ACCS) * PER_CELL
    z, correct = torch.randn(P, toy.V, generator=g), torch.zeros(P, toy.V)
    p = 0
    for K, skew in KINDS:
        for acc in ACCS:
            for _ in range(PER_CELL):
                correct[p, :K] = 1.0
                z[p, K] += 2.0  # a likely wrong answer
                zc = -skew * torch.arange(K) + 0.1 * torch.randn(K, generator=g)
                shift = torch.logit(torch.tensor(acc)) + z[p, K:].logsumexp(0) - zc.logsumexp(0)
                z[p, :K] = zc + shift  # sum_correct pi = sigmoid(logsumexp(z_c) - logsumexp(z_w)) = acc
                p += 1
    return z, correct


def cell_metrics(pi, correct):
    """(len(KINDS), len(ACCS)) grid per metric from a final policy, averaging each cell's prompts."""
    out = {}
    for key in KEYS:
        per_prompt = torch.tensor([toy.metrics(pi[i:i + 1].log(), correct[i:i + 1])[key] for i in range(len(pi))])
        out[key] = per_prompt.view(len(KINDS), len(ACCS), PER_CELL).mean(-1)
    return out


def main():
    t0 = time.time()
    results = {m: {k: 0.0 for k in KEYS} for m in ("base", "grpo", "ds-grpo", "entropy-bonus")}
    for seed in SEEDS:
        z0, correct = make_map_problem(seed)
        lr = toy.LR * len(z0) / toy.P  # the same step per prompt as toy.py's P prompts
        finals = {"base": z0.softmax(-1)}
        for method in ("grpo", "ds-grpo", "entropy-bonus"):
            kw = {"alpha": DS[0], "beta": DS[1]} if method == "ds-grpo" else {"coef": BONUS}
            finals[method] = toy.run(method, steps=STEPS, lr=lr, seed=seed, problem=(z0, correct), **kw)[1]
        for m, pi in finals.items():
            for k, v in cell_metrics(pi, correct).items():
                results[m][k] = results[m][k] + v / len(SEEDS)
    rows = [f"K={K} {'skewed' if s else 'flat'}" for K, s in KINDS]
    fig, axes = plt.subplots(2, len(KEYS), figsize=(16, 8.5))
    for r, other in enumerate(("grpo", "entropy-bonus")):
        for c, key in enumerate(KEYS):
            d = (results["ds-grpo"][key] - results[other][key]).numpy()
            lim = max(abs(d).max(), 1e-3)
            ax = axes[r, c]
            im = ax.imshow(d, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            for (i, j), v in zip([(i, j) for i in range(d.shape[0]) for j in range(d.shape[1])], d.flatten()):
                ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=8)
            ax.set(xticks=range(len(ACCS)), xticklabels=ACCS, yticks=range(len(rows)), yticklabels=rows,
                   xlabel="base accuracy π(correct)", title=f"DS − {'GRPO' if other == 'grpo' else 'bonus'}: {key}")
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"Where DS-GRPO (α={DS[0]}, β={DS[1]}) helps: blue = DS higher. {STEPS} steps, same samples for "
                 f"every method, mean of {len(SEEDS)} seeds × {PER_CELL} prompts per cell", fontsize=11)
    fig.tight_layout()
    os.makedirs(toy.ASSETS, exist_ok=True)
    fig.savefig(os.path.join(toy.ASSETS, "toy_map.png"), dpi=100)
    with open(os.path.join(toy.ASSETS, "toy_map.json"), "w") as f:
        json.dump({"accs": ACCS, "kinds": KINDS, "steps": STEPS, "seeds": SEEDS, "ds": DS, "bonus": BONUS,
                   "results": {m: {k: v.tolist() for k, v in r.items()} for m, r in results.items()}}, f)
    for key in KEYS:
        print(f"\n{key}: base / GRPO / DS / bonus per cell")
        print(f"{'':>14}" + "".join(f"{a:>24}" for a in ACCS))
        for i, name in enumerate(rows):
            print(f"{name:>14}" + "".join(
                f"{' '.join(f'{results[m][key][i, j].item():.2f}' for m in results):>24}" for j in range(len(ACCS))))
    print(f"\n({time.time() - t0:.1f}s; assets/toy_map.png)")


if __name__ == "__main__":
    main()
