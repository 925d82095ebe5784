"""
Toy: selection bias, reinforcement bias, and what DS-GRPO does about them, on the discrete-trajectory
setting of the DS paper's analysis (METHODS.md, DS-GRPO). A few seconds on a CPU:

    python toy.py     # prints tables; writes assets/toy_dynamics.png, toy_final.png, toy_tradeoff.png

Setting. P prompts, each with a tabular softmax policy pi(y|x) = softmax(z_x) over V answers (the
logits z are the only parameters). An answer is a whole trajectory of one token, so the length-normalised
L_i of DS-Eq.6 is just log pi_old(y_i). Per prompt a few answers are correct (r = 1): one dominant correct
answer and rarer ones; plus one likely wrong answer; prompts range from easy to hard.

Each step, for every prompt, M groups of G answers are sampled from pi_old = the current policy (seeded
torch.Generator) and every method takes ONE on-policy SGD step (rho = 1, so the clipped surrogate is
REINFORCE with a group baseline; token-mean = mean over all B = P*M*G samples):
    GRPO    A_i = (r_i - mean_j r_j) / (std_j r_j + eps)  (loss.group_advantages);  loss = -(1/B) sum_i A_i log pi(y_i)
    +H/-H   loss_GRPO -/+ c * H_bar, H_bar = mean over prompts of the exact entropy of pi(.|x)  (loss.entropy_term's signs)
    DS      A_i^DS = A_i - alpha 1[r_i=1] L_i + beta 1[r_i=0] L_i,  L_i = log pi_old(y_i), detached
            (DS-Eq.6, loss.ds_term: the pi_old form of DS-Eq.4's r - g_p log pi_base / r + g_n log pi_base)
Same samples per step, lr, steps and seed for every method; with alpha = beta = 0 DS is GRPO exactly.

Mechanism. In expectation the GRPO step on the logit of a correct answer y is pi(y) * k (k shared by all
correct answers): it is sampled more (selection) and, as its logit grows, sampled still more
(reinforcement), so z_dominant - z_rare grows like k (pi_dom - pi_rare): mass piles onto the answer that
was already likely. In expectation the DS bonus adds alpha * pi(y)(-log pi(y) - S), S = sum_{correct}
pi (-log pi): an entropy gradient restricted to the correct answers (it flattens them). The DS penalty
pushes sampled wrong answers down; through the softmax that mass goes to all other answers in proportion
to pi, the dominant correct one first, so on its own it also sharpens the correct answers.

Metrics (exact, from the policy; mean over prompts): correct = pi(correct); diversity = entropy of pi
restricted to the correct answers and renormalised, / log(#correct) (1 = uniform over them, 0 = one),
averaged over prompts weighted by their correct mass (a prompt that lost its correct answers does not
count as "diverse"); distinct@16 = expected number of distinct correct answers in 16 samples,
sum_{y correct} 1 - (1 - pi(y))^16; pass@k = 1 - (1 - pi(correct))^k, exact for i.i.d. sampling.

Simplified vs the paper / train.py: tabular logits (no shared parameters, no transfer between prompts),
one token per trajectory, one gradient step per batch (clipping never active), no KL, no format reward,
sampled groups (not the exact expected update). Here pass@k depends on the correct mass alone, so
diversity among correct answers cannot show in it (see diversity and distinct@16). The coefficient scale
is not the paper's: its gamma = 0.01 multiplies a per-token mean log-prob, here L_i = log pi(answer)
reaches -8. The main run uses one strength for all, c = alpha = beta = COEF (0.3: chosen after seeing
that 0.1 barely moves the entropy heuristics off GRPO); the sweep and a 5-seed table print the rest, and
DS_ALT was picked from that sweep after seeing it. What the runs show is in the README ("The theory in
seconds"); toy_map.py maps where DS helps across solution multiplicity and base accuracy.
"""
import os
import time

import torch
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loss import group_advantages, ds_term

# ----------------------------------------------------------------------------- config
P, V = 6, 30  # prompts, answers per prompt
N_CORRECT = [3, 4, 5, 6, 4, 5]  # correct answers per prompt
SHIFT = [1.0, 0.0, -1.0, -2.0, -3.0, 0.5]  # added to every correct logit: easy ... hard
G, M = 8, 16  # group size; groups per prompt per step (P*M*G = 768 samples per step, every method)
STEPS, LR = 300, 1.0  # plain SGD on the logits
COEF = 0.3  # main run: entropy coefficient c, and alpha = beta for DS (one strength for all)
DS_ALT = (1.0, 0.1)  # (alpha, beta) of a second DS line: picked from the sweep AFTER seeing it
SWEEP_C = (0.1, 0.3, 1.0)  # c for +H / -H, and alpha for DS
SWEEP_BETA = (0.0, 0.1, 0.3, 1.0)  # beta for DS
SEED, SEEDS = 0, (0, 1, 2, 3, 4)  # the run / the robustness table
DIAG_PROMPT = 0  # the prompt in toy_final.png (the first one, not chosen for its result)
METHODS = ("grpo", "entropy-bonus", "entropy-penalty", "ds-grpo")
NAMES = {"grpo": "GRPO", "entropy-bonus": "GRPO + c·H", "entropy-penalty": "GRPO − c·H", "ds-grpo": "DS-GRPO"}
COLORS = {"grpo": "tab:blue", "entropy-bonus": "tab:green", "entropy-penalty": "tab:orange",
          "ds-grpo": "tab:red"}
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
torch.set_num_threads(1)  # tiny tensors: threads only add overhead


# ----------------------------------------------------------------------------- the toy problem
def make_problem(seed=SEED):
    """Base logits (P, V) and correctness (P, V) in {0, 1}. Answers 0..n_c-1 are correct: answer 0 is
    the dominant one (3 + s), the others spread from 1 + s to -1 + s (s = SHIFT, difficulty), each with
    N(0, 0.3^2) noise (too small to reorder them); answer n_c is a likely wrong answer (2 + N(0, 1)); the
    other wrong answers are N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(P, V, generator=g)
    correct = torch.zeros(P, V)
    for p, (n_c, s) in enumerate(zip(N_CORRECT, SHIFT)):
        correct[p, :n_c] = 1.0
        z[p, :n_c] = 0.3 * z[p, :n_c] + s + torch.cat([torch.tensor([3.0]), torch.linspace(1.0, -1.0, n_c - 1)])
        z[p, n_c] += 2.0
    return z, correct


def metrics(z, correct):
    """Exact metrics of softmax(z), averaged over prompts (diversity: weighted by correct mass)."""
    pi = z.softmax(-1)
    p_c = (pi * correct).sum(-1)  # (P,) correct mass
    q = pi * correct / p_c[:, None]  # restricted to the correct answers, renormalised
    h_c = -torch.xlogy(q, q).sum(-1) / correct.sum(-1).log().clamp(min=1e-9)  # (P,) normalised; 0 if one correct
    return {"correct": p_c.mean().item(), "diversity": ((p_c * h_c).sum() / p_c.sum()).item(),
            "distinct@16": ((1 - (1 - pi) ** 16) * correct).sum(-1).mean().item(),
            "pass@1": p_c.mean().item(), "pass@16": (1 - (1 - p_c) ** 16).mean().item()}


# ----------------------------------------------------------------------------- one method
def run(method, steps=STEPS, lr=LR, coef=COEF, alpha=None, beta=None, seed=SEED, m=M, g_size=G, problem=None):
    """Train the logits with `method`; returns (history: dict of lists over steps 0..steps, final pi).
    coef is c for +H / -H; alpha / beta (DS only) default to coef. `problem` = (logits, correct) replaces
    make_problem's (toy_map.py); the loss is a mean over all prompts, so more prompts want a larger lr."""
    alpha = coef if alpha is None else alpha
    beta = coef if beta is None else beta
    z0, correct = make_problem(seed) if problem is None else problem
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)  # the sampling stream, the same for every method
    hist = {k: [v] for k, v in metrics(z0, correct).items()}
    rows = torch.arange(z0.shape[0]).repeat_interleave(m * g_size)  # (B,) prompt of each sample; groups contiguous
    for _ in range(steps):
        logp_all = z.log_softmax(-1)  # (P, V)
        with torch.no_grad():  # pi_old = the current policy: M groups of G answers per prompt
            y = torch.multinomial(logp_all.exp(), m * g_size, replacement=True, generator=gen).reshape(-1)
        r = correct[rows, y]  # (B,) reward = correctness
        logp = logp_all[rows, y]  # (B,) log pi(y_i), with grad
        adv = group_advantages(r, g_size)  # GRPO
        if method == "ds-grpo":
            adv = adv + ds_term(r, logp.detach(), alpha, beta)  # DS-Eq.6, L_i = log pi_old(y_i)
        loss = -(adv * logp).mean()  # on-policy surrogate (rho = 1), mean over all samples
        if method in ("entropy-bonus", "entropy-penalty"):
            h_bar = -(logp_all.exp() * logp_all).sum(-1).mean()  # exact entropy, mean over prompts
            loss = loss + (-coef if method == "entropy-bonus" else coef) * h_bar  # -/+ c H_bar
        opt.zero_grad()
        loss.backward()
        opt.step()
        for k, v in metrics(z.detach(), correct).items():
            hist[k].append(v)
    return hist, z.detach().softmax(-1)


# ----------------------------------------------------------------------------- plots
def plot_dynamics(runs, path):
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    panels = [("correct", "correct mass π(correct)", "Correctness"),
              ("diversity", "H(π | correct) / log(#correct)", "Diversity among correct answers"),
              ("pass@1", "pass@k = 1 − (1 − π(correct))^k", "pass@1 (solid), pass@16 (dashed)")]
    for ax, (key, ylabel, title) in zip(axes, panels):
        for label, (h, color) in runs.items():
            ax.plot(h[key], color=color, label=label)
            if key == "pass@1":
                ax.plot(h["pass@16"], color=color, ls="--")
        ax.set(xlabel="training step", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=9, loc="lower right")
    fig.suptitle(f"Tabular toy ({P} prompts × {V} answers, G={G}, {P * M * G} samples/step, SGD lr={LR}), "
                 f"mean over prompts; diversity weighted by correct mass; * = picked from the sweep after seeing it", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_final(finals, base, correct, prompt, path):
    n_c = int(correct[prompt].sum())
    series = [("base", base, "tab:gray")] + list(finals)
    fig, ax = plt.subplots(figsize=(12, 4.6))
    w = 0.84 / len(series)
    for j, (name, pi, color) in enumerate(series):
        vals = torch.cat([pi[prompt, :n_c], (pi[prompt] * (1 - correct[prompt])).sum()[None]])
        ax.bar([i + (j - (len(series) - 1) / 2) * w for i in range(n_c + 1)], vals.tolist(), w, label=name,
               color=color)
    ax.set_xticks(range(n_c + 1), [f"correct #{i}" + (" (dominant)" if i == 0 else "") for i in range(n_c)]
                  + ["all wrong answers"])
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 2)
    ax.set(ylabel="probability π(y | x)  (log scale)", title=f"Final policy on prompt {prompt} ({n_c} correct answers) "
                                                f"after {STEPS} steps, vs base")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_tradeoff(sweep, base, path):
    """Final wrong mass 1 - pi(correct) (log, reversed: right = more correct) vs diversity (log)."""
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.scatter([1 - base["correct"]], [base["diversity"]], color="tab:gray", marker="s", s=60, label="base")
    for (mth, a, b), h in sweep.items():
        x, y = 1 - h["correct"][-1], h["diversity"][-1]
        ax.scatter([x], [y], color=COLORS[mth], marker={"ds-grpo": "o", "grpo": "*"}.get(mth, "^"),
                   s=200 if mth == "grpo" else 60, zorder=3 if mth == "grpo" else 2,
                   label=NAMES[mth] if a in (None, SWEEP_C[0]) and b in (None, SWEEP_BETA[0]) else None)
        tag = "" if a is None else (f"c={a}" if b is None else f"{a}/{b}")
        ax.annotate(tag, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set(xlabel="final wrong mass 1 − π(correct)  (log; right = more correct)",
           ylabel="final diversity among correct answers (log)",
           title=f"Trade-off after {STEPS} steps, every setting tried (seed {SEED}); up-right is better\n"
                 f"labels: c for ±H, α/β for DS")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="center left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def row(name, m):
    return f"{name:<26}" + "".join(f"{m[k]:>12.3f}" for k in ("correct", "diversity", "distinct@16", "pass@1", "pass@16"))


def main():
    t0 = time.time()
    z0, correct = make_problem()
    base, b = z0.softmax(-1), metrics(z0, correct)
    print("base correct mass per prompt:", " ".join(f"{v:.3f}" for v in (base * correct).sum(-1).tolist()))
    sweep = {("grpo", None, None): run("grpo")}
    for c in SWEEP_C:
        for mth in ("entropy-bonus", "entropy-penalty"):
            sweep[(mth, c, None)] = run(mth, coef=c)
        for bt in SWEEP_BETA:
            sweep[("ds-grpo", c, bt)] = run("ds-grpo", alpha=c, beta=bt)
    main_cfgs = [("GRPO", ("grpo", None, None), COLORS["grpo"]),  # label, sweep key, colour
                 (f"GRPO + c·H (c={COEF})", ("entropy-bonus", COEF, None), COLORS["entropy-bonus"]),
                 (f"GRPO − c·H (c={COEF})", ("entropy-penalty", COEF, None), COLORS["entropy-penalty"]),
                 (f"DS-GRPO (α=β={COEF})", ("ds-grpo", COEF, COEF), COLORS["ds-grpo"]),
                 (f"DS-GRPO (α={DS_ALT[0]}, β={DS_ALT[1]})*", ("ds-grpo", *DS_ALT), "tab:purple")]
    os.makedirs(ASSETS, exist_ok=True)
    plot_dynamics({lab: (sweep[key][0], col) for lab, key, col in main_cfgs}, os.path.join(ASSETS, "toy_dynamics.png"))
    plot_final([(lab, sweep[key][1], col) for lab, key, col in main_cfgs], base, correct, DIAG_PROMPT,
               os.path.join(ASSETS, "toy_final.png"))
    plot_tradeoff({k: v[0] for k, v in sweep.items()}, b, os.path.join(ASSETS, "toy_tradeoff.png"))
    header = f"{'method':<26}" + "".join(f"{k:>12}" for k in ("correct", "diversity", "distinct@16", "pass@1", "pass@16"))
    print(f"\nmain run (c = alpha = beta = {COEF}); * = DS setting picked from the sweep after seeing it\n"
          f"{header}\n{row('base', b)}")
    for lab, key, _ in main_cfgs:
        print(row(lab, {k: v[-1] for k, v in sweep[key][0].items()}))
    print(f"\nsweep (every setting tried)\n{header}")
    for (mth, a, bt), (h, _) in sweep.items():
        print(row(NAMES[mth] + ("" if a is None else (f" c={a}" if bt is None else f" a={a} b={bt}")),
                  {k: v[-1] for k, v in h.items()}))
    print(f"\nseeds {SEEDS[0]}-{SEEDS[-1]} (each seed redraws the problem and the samples): "
          f"final correct / diversity, mean [min, max]")
    for lab, (mth, a, bt), _ in main_cfgs:
        kw = {} if a is None else ({"coef": a} if bt is None else {"alpha": a, "beta": bt})
        fin = torch.tensor([[h["correct"][-1], h["diversity"][-1]] for h in (run(mth, seed=s, **kw)[0] for s in SEEDS)])
        print(f"{lab:<26}" + "".join(f"   {x.mean():.3f} [{x.min():.3f}, {x.max():.3f}]" for x in fin.T))
    print(f"\n(steps={STEPS}, lr={LR}, G={G}, {P * M * G} samples/step, seed={SEED}; diversity = normalised "
          f"entropy among correct answers, weighted by correct mass; {time.time() - t0:.1f}s)")


if __name__ == "__main__":
    main()
