"""
Toy: selection bias, reinforcement bias, and what DS-GRPO does about them, on the discrete-trajectory
setting the DS paper's analysis uses (PAPERS.md section 2). Runs in seconds on a CPU:

    python toy.py          # prints a table, writes assets/toy_dynamics.png and assets/toy_final.png

The setting. P prompts, each with a tabular softmax policy pi(y|x) = softmax(z_x) over V answers
(z = the only parameters, one logit per (prompt, answer)). Each answer is one whole "trajectory", i.e.
one token, so the length-normalised L_i of DS-Eq.6 is just log pi_old(y_i). Per prompt a few answers are
correct (r = 1): one dominant correct answer and rarer ones; one likely wrong answer; the rest random.
Prompts range from easy to hard (base correct mass from a few % to most of it).

Each step, for every prompt, M groups of G answers are sampled from pi_old = the current policy (seeded
torch.Generator), and every method takes ONE on-policy SGD step (rho = 1, so the clipped surrogate is
REINFORCE with a group baseline, token-mean = mean over all B = P*M*G samples):
    GRPO      A_i = (r_i - mean_j r_j) / (std_j r_j + eps)        (loss.group_advantages)
              loss = -(1/B) sum_i A_i log pi(y_i)
    +H / -H   loss_GRPO -/+ c * H_bar, H_bar = mean over prompts of the exact entropy H(pi(.|x))
              (the uniform heuristics, loss.entropy_term's sign convention)
    DS        A_i^DS = A_i - alpha 1[r_i=1] L_i + beta 1[r_i=0] L_i,  L_i = log pi_old(y_i), detached
              (DS-Eq.6, loss.ds_term; the pi_old form of DS-Eq.4's reward r - g_p log pi_base / r + g_n log pi_base)
Same samples-per-step, lr, steps and seed for every method; with alpha = beta = 0, DS is GRPO exactly.

Why the biases appear: in expectation the GRPO step on logit z_y of a correct answer is proportional to
pi(y) (selection: sampled more often) times a group-relative advantage, so the logit of the dominant
correct answer grows fastest, and as it grows it is sampled still more (reinforcement): the mass among
correct answers piles onto the one that was already likely. In expectation the DS term adds
alpha * sum_{y correct} pi(y) (-log pi(y)) (e_y - pi), the gradient of the entropy restricted to the
correct answers plus alpha * grad pi(correct), and the mirror image with -beta on the wrong ones.

Metrics (exact, from the policy, averaged over prompts): correct mass p = pi(correct); diversity =
entropy of pi restricted to the correct answers and renormalised, divided by log(#correct) (1 = uniform
over the correct answers, 0 = all on one); pass@k = 1 - (1 - p)^k (exact for i.i.d. sampling).

Simplified vs the paper / train.py: tabular logits (no shared parameters, so no transfer between
prompts: a prompt can only lose correct mass through its own update), one token per trajectory, one
gradient step per batch (no clipping active), no KL, no format reward, sampled groups (not the exact
expected update). Caveat: in this toy pass@k is a function of the correct mass alone, so diversity
among correct answers cannot show up in pass@k here; it is reported as its own panel.
Coefficients are set once (c = alpha = beta, below) and not tuned per method; read the printed table
for what actually happens (it is not forced to favour DS).
"""
import os
import math
import time

import torch
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loss import group_advantages, ds_term

# ----------------------------------------------------------------------------- config
P = 6  # prompts
V = 30  # answers per prompt
N_CORRECT = [3, 4, 5, 6, 4, 5]  # correct answers per prompt
SHIFT = [1.0, 0.0, -1.0, -2.0, -3.0, 0.5]  # difficulty: added to every correct logit (easy -> hard)
G = 8  # group size
M = 16  # groups per prompt per step (P*M*G = 768 samples per step, every method)
STEPS = 300
LR = 1.0  # plain SGD on the logits
COEF = 0.1  # the entropy coefficient c, and alpha = beta for DS (the same strength everywhere)
SEED = 0
KS = (1, 16)
METHODS = ("grpo", "entropy-bonus", "entropy-penalty", "ds-grpo")
LABELS = {"grpo": "GRPO", "entropy-bonus": "GRPO + c·H (bonus)", "entropy-penalty": "GRPO − c·H (penalty)",
          "ds-grpo": "DS-GRPO (α, β)"}
COLORS = {"grpo": "tab:blue", "entropy-bonus": "tab:green", "entropy-penalty": "tab:orange",
          "ds-grpo": "tab:red"}
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


# ----------------------------------------------------------------------------- the toy problem
def make_problem(seed=SEED):
    """Base logits (P, V) and correctness (P, V) in {0, 1}. In each prompt answers 0..n_c-1 are correct:
    answer 0 dominant (+3), the others spread from +1 to -1; answer n_c is a likely wrong answer (+2)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(P, V, generator=g)
    correct = torch.zeros(P, V)
    for p, (n_c, s) in enumerate(zip(N_CORRECT, SHIFT)):
        correct[p, :n_c] = 1.0
        z[p, 0] += 3.0  # the dominant correct answer
        z[p, 1:n_c] += torch.linspace(1.0, -1.0, n_c - 1)  # rarer correct answers
        z[p, :n_c] += s
        z[p, n_c] += 2.0  # a likely wrong answer
    return z, correct


def metrics(z, correct, ks=KS):
    """Exact metrics of the policy softmax(z), averaged over prompts."""
    pi = z.softmax(-1)
    p_c = (pi * correct).sum(-1)  # (P,) correct mass
    q = pi * correct / p_c[:, None]  # pi restricted to the correct answers, renormalised
    h_c = -(torch.xlogy(q, q)).sum(-1) / correct.sum(-1).log()  # normalised entropy among correct
    out = {"correct": p_c.mean().item(), "diversity": h_c.mean().item()}
    for k in ks:
        out[f"pass@{k}"] = (1 - (1 - p_c) ** k).mean().item()
    return out


# ----------------------------------------------------------------------------- one method
def run(method, steps=STEPS, lr=LR, coef=COEF, alpha=None, beta=None, seed=SEED, m=M, g_size=G):
    """Train the logits with `method`; returns (history: dict of lists over steps 0..steps, final pi).
    alpha / beta default to coef (DS only); coef is the entropy coefficient (+H / -H only)."""
    alpha = coef if alpha is None else alpha
    beta = coef if beta is None else beta
    z0, correct = make_problem(seed)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)  # the samples: identical across methods at step 0
    hist = {k: [v] for k, v in metrics(z0, correct).items()}
    rows = torch.arange(P).repeat_interleave(m * g_size)  # (B,) prompt of each sample, groups contiguous
    for _ in range(steps):
        logp_all = z.log_softmax(-1)  # (P, V)
        with torch.no_grad():  # sample pi_old = the current policy: M groups of G per prompt
            y = torch.multinomial(logp_all.exp(), m * g_size, replacement=True, generator=gen).reshape(-1)
        r = correct[rows, y]  # (B,) reward = correctness
        logp = logp_all[rows, y]  # (B,) log pi(y_i), with grad
        old_logp = logp.detach()  # L_i = log pi_old(y_i) (one token: length-normalised = itself)
        adv = group_advantages(r, g_size)  # GRPO
        if method == "ds-grpo":
            adv = adv + ds_term(r, old_logp, alpha, beta)  # DS-Eq.6
        loss = -(adv * logp).mean()  # on-policy surrogate (rho = 1), token-mean over all samples
        if method in ("entropy-bonus", "entropy-penalty"):
            h_bar = -(logp_all.exp() * logp_all).sum(-1).mean()  # exact H(pi(.|x)), mean over prompts
            loss = loss + (-1.0 if method == "entropy-bonus" else 1.0) * coef * h_bar  # -/+ c H_bar
        opt.zero_grad()
        loss.backward()
        opt.step()
        for k, v in metrics(z.detach(), correct).items():
            hist[k].append(v)
    return hist, z.detach().softmax(-1)


# ----------------------------------------------------------------------------- plots
def plot_dynamics(hists, path):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    panels = [("correct", "correct mass π(correct)", "Correctness"),
              ("diversity", "H(π | correct) / log(#correct)", "Diversity among correct answers"),
              (None, "pass@k = 1 − (1 − π(correct))^k", "pass@1 (solid) and pass@16 (dashed)")]
    for ax, (key, ylabel, title) in zip(axes, panels):
        for mth, h in hists.items():
            if key is None:
                ax.plot(h["pass@1"], color=COLORS[mth], label=LABELS[mth] + " pass@1")
                ax.plot(h["pass@16"], color=COLORS[mth], ls="--", label=LABELS[mth] + " pass@16")
            else:
                ax.plot(h[key], color=COLORS[mth], label=LABELS[mth])
        ax.set(xlabel="training step", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=9)
    fig.suptitle(f"Tabular toy: {P} prompts × {V} answers, G={G}, {M} groups/prompt/step, SGD lr={LR}, "
                 f"c = α = β = {COEF}  (mean over prompts)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_final(finals, base, correct, prompt, path):
    n_c = int(correct[prompt].sum())
    series = [("base", base[prompt], "tab:gray")] + [(LABELS[m], pi[prompt], COLORS[m]) for m, pi in finals.items()]
    fig, ax = plt.subplots(figsize=(9, 4.4))
    width = 0.8 / len(series)
    for j, (name, pi, color) in enumerate(series):
        vals = torch.cat([pi[:n_c], (pi * (1 - correct[prompt])).sum()[None]])  # correct answers, then all wrong
        ax.bar([i + (j - (len(series) - 1) / 2) * width for i in range(n_c + 1)], vals.tolist(), width,
               label=name, color=color)
    ax.set_xticks(range(n_c + 1), [f"correct #{i}" + (" (dominant)" if i == 0 else "") for i in range(n_c)]
                  + ["all wrong\nanswers"])
    ax.set(ylabel="probability π(y | x)", title=f"Final policy on prompt {prompt} ({n_c} correct answers), "
                                                f"after {STEPS} steps")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main():
    t0 = time.time()
    torch.manual_seed(SEED)
    z0, correct = make_problem()
    base = z0.softmax(-1)
    print("base correct mass per prompt:", " ".join(f"{v:.3f}" for v in (base * correct).sum(-1).tolist()))
    hists, finals = {}, {}
    for mth in METHODS:
        hists[mth], finals[mth] = run(mth)
    os.makedirs(ASSETS, exist_ok=True)
    plot_dynamics(hists, os.path.join(ASSETS, "toy_dynamics.png"))
    plot_final(finals, base, correct, prompt=1, path=os.path.join(ASSETS, "toy_final.png"))
    b = metrics(z0, correct)
    print(f"\n{'method':<22}{'correct':>9}{'divers.':>9}{'pass@1':>9}{'pass@16':>9}")
    print(f"{'base':<22}{b['correct']:>9.3f}{b['diversity']:>9.3f}{b['pass@1']:>9.3f}{b['pass@16']:>9.3f}")
    for mth, h in hists.items():
        print(f"{LABELS[mth]:<22}{h['correct'][-1]:>9.3f}{h['diversity'][-1]:>9.3f}"
              f"{h['pass@1'][-1]:>9.3f}{h['pass@16'][-1]:>9.3f}")
    print(f"\n(steps={STEPS}, lr={LR}, c=alpha=beta={COEF}, G={G}, {P * M * G} samples/step; "
          f"diversity = normalised entropy among correct answers; {time.time() - t0:.1f}s)")


if __name__ == "__main__":
    main()
