"""toy.py: the tabular DS / GRPO toy. Checks of the mechanics, not of the paper's headline (that is an
experiment: see the tables `python toy.py` prints). Each run is a few dozen steps: well under a second."""
import math

import torch

import toy


def _dominant_share(pi, correct):
    """Per prompt: share of the dominant correct answer (answer 0) in the correct mass."""
    return pi[:, 0] / (pi * correct).sum(-1)


def test_run_returns_finite_metrics():
    for method in toy.METHODS:
        hist, pi = toy.run(method, steps=5)
        assert set(hist) >= {"correct", "diversity", "distinct@16", "pass@1", "pass@16"}
        for k, v in hist.items():
            assert len(v) == 6 and all(math.isfinite(x) for x in v), (method, k)
        assert torch.isfinite(pi).all() and torch.allclose(pi.sum(-1), torch.ones(toy.P))


def test_metrics_by_hand():
    # correct mass and pass@16 against their definitions; diversity at its two ends
    z, correct = toy.make_problem()
    m = toy.metrics(z, correct)
    pi = z.softmax(-1)
    p_c = (pi * correct).sum(-1)
    assert abs(m["correct"] - p_c.mean().item()) < 1e-6
    assert abs(m["pass@16"] - (1 - (1 - p_c) ** 16).mean().item()) < 1e-6
    assert 0 < m["diversity"] < 1 and 0 < m["distinct@16"] <= max(toy.N_CORRECT)
    # all mass on one correct answer -> diversity 0; uniform over the correct ones -> diversity 1
    one = torch.full_like(z, -1e4)
    one[:, 0] = 0.0
    assert abs(toy.metrics(one, correct)["diversity"]) < 1e-6
    unif = torch.where(correct.bool(), 0.0, -1e4)
    assert abs(toy.metrics(unif, correct)["diversity"] - 1) < 1e-5


def test_ds_with_zero_coefficients_is_grpo_exactly():
    h_grpo, pi_grpo = toy.run("grpo", steps=30)
    h_ds, pi_ds = toy.run("ds-grpo", steps=30, alpha=0.0, beta=0.0)
    assert torch.equal(pi_grpo, pi_ds)
    assert h_grpo == h_ds
    # and with alpha, beta > 0 it really differs (the DS term is wired in)
    _, pi_ds2 = toy.run("ds-grpo", steps=30, alpha=0.3, beta=0.3)
    assert not torch.equal(pi_grpo, pi_ds2)


def test_grpo_increases_correct_mass():
    hist, _ = toy.run("grpo", steps=50)
    assert hist["correct"][-1] > hist["correct"][0] + 0.2


def test_grpo_piles_mass_onto_the_dominant_correct_answer():
    # selection + reinforcement bias: among the correct answers, the already-likely one gains share
    z0, correct = toy.make_problem()
    base = _dominant_share(z0.softmax(-1), correct)
    hist, pi = toy.run("grpo", steps=50)
    after = _dominant_share(pi, correct)
    easy = (z0.softmax(-1) * correct).sum(-1) > 0.2  # prompts where GRPO gets signal from the start
    assert easy.sum() >= 2
    assert (after[easy] > base[easy]).all() and (after[easy] > 0.95).all(), (base, after)
    assert after.mean() > base.mean()
    assert hist["diversity"][-1] < hist["diversity"][0]


def test_entropy_term_signs():
    # the bonus raises the policy's entropy relative to GRPO, the penalty lowers it (same samples at step 0)
    def entropy(pi):
        return -(pi * pi.log()).sum(-1).mean().item()
    _, pi_g = toy.run("grpo", steps=20)
    _, pi_b = toy.run("entropy-bonus", steps=20, coef=0.3)
    _, pi_p = toy.run("entropy-penalty", steps=20, coef=0.3)
    assert entropy(pi_b) > entropy(pi_g) > entropy(pi_p)


def test_ds_term_sign_in_one_step():
    # DS-Eq.6 on a fixed batch: with the GRPO part zero (all answers in every group correct), the bonus
    # -alpha * log pi_old(y) is largest for the rarest correct answer, so one SGD step on this batch
    # (answers 0, 1, 2 sampled 3:3:2 times per group) raises the rarest one's share and lowers the dominant's.
    z0, correct = toy.make_problem()
    z = z0.clone().requires_grad_(True)
    y = torch.tensor([0, 1, 2] * 8)[:8].repeat(2)  # two groups of 8 on prompt 0, answers 0..2 (all correct)
    logp = z.log_softmax(-1)[0, y]
    r = correct[0, y]
    adv = toy.group_advantages(r, 8) + toy.ds_term(r, logp.detach(), 0.3, 0.3)
    assert (toy.group_advantages(r, 8) == 0).all() and (adv > 0).all()
    (-(adv * logp).mean()).backward()
    with torch.no_grad():
        q0 = z0[0, :3].softmax(-1)
        q1 = (z0[0] - 1.0 * z.grad[0])[:3].softmax(-1)
    assert q1[2] > q0[2] and q1[0] < q0[0]
