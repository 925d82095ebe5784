"""GRPO and DS-GRPO gradients by example (test_loss.py has the advantages and losses worked out by hand):
what one step does to each group, and on a tabular policy, what one step of each method does to the
probabilities of correct and wrong answers (METHODS.md sections 2-4)."""
import pytest
import torch
from torch.testing import assert_close

import loss
from test_loss import TIGHT, t


# ============================================================================= gradients per group
def _policy_grad(adv_bt, old, mask):
    """Gradient of the on-policy token-mean loss w.r.t. logp (logp = old_logp: rho = 1)."""
    logp = old.clone().requires_grad_()
    loss.policy_loss(logp, old, adv_bt, mask, loss.normaliser(mask, "token-mean")).backward()
    return logp.grad


@pytest.mark.parametrize("scale_rewards", ["group", "none"])
def test_grpo_zero_advantage_groups_give_zero_gradient(scale_rewards):
    # G = 4: group 0 all correct, group 1 all wrong, group 2 mixed
    rewards = t([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1])
    old = -torch.rand(12, 3, generator=torch.Generator().manual_seed(2)) * 4
    mask = torch.ones(12, 3)
    a = loss.advantages("grpo", rewards, rewards, old, mask, G=4, scale_rewards=scale_rewards)[0]
    grad = _policy_grad(a, old, mask)
    assert torch.equal(grad[:8], torch.zeros(8, 3))  # exactly zero: no signal from equal groups
    assert (grad[8:] != 0).all()


def test_ds_grpo_still_pushes_all_correct_group_more_for_unlikely_responses():
    # Under GRPO an all-correct group has A_i = 0 and teaches nothing. DS-Eq.6 adds the bonus
    # -alpha * L_i (>= 0 since L_i <= 0) to every correct response, so the whole group is still
    # pushed up, and the *less likely* response (more negative L_i) gets the larger push: this is
    # the smoothing that fights selection/reinforcement bias toward already-likely solutions.
    rewards = t([1, 1, 1, 1])
    old = t([[-.1, -.1], [-.5, -.5], [-1., -1.], [-3., -3.]])  # L = -.1, -.5, -1, -3
    mask = torch.ones(4, 2)
    a = loss.advantages("ds-grpo", rewards, rewards, old, mask, G=4, alpha=.1, beta=.1)[0]
    assert_close(a[:, 0], t([.01, .05, .1, .3]), **TIGHT)  # -alpha * L_i, GRPO part 0
    grad = _policy_grad(a, old, mask)
    push = -grad[:, 0]  # gradient descent raises logp by lr * push
    assert (push > 0).all()
    assert (push[1:] > push[:-1]).all()  # strictly larger for less likely responses
    # and an all-wrong group is pushed down by +beta * L_i (< 0)
    a = loss.advantages("ds-grpo", 0 * rewards, 0 * rewards, old, mask, G=4, alpha=.1, beta=.1)[0]
    assert (a < 0).all()


# ============================================================================= property: one step
# A one-prompt "policy" that is a softmax over 6 whole answers (responses of length T = 1, so
# logp = log softmax(logits)[answer]). Answers 0, 1, 2 are correct, 3, 4, 5 are wrong.
CORRECT = torch.tensor([1., 1., 1., 0., 0., 0.])


def _one_step(base, algo, alpha, beta, n_groups=4096, G=8, lr=0.5, seed=0, entropy_coef=0.0):
    """Samples n_groups groups of G answers from `base` (seeded), takes ONE SGD step on the logits
    with the on-policy token-mean loss and returns the new probabilities. The entropy baselines add
    -/+ entropy_coef * H, H the full softmax's entropy (the same for every token, with grad)."""
    base = torch.tensor(base)
    gen = torch.Generator().manual_seed(seed)
    answers = torch.multinomial(base, n_groups * G, replacement=True, generator=gen)
    correct = CORRECT[answers]
    logits = base.log().clone().requires_grad_()
    logp_all = torch.log_softmax(logits, -1)  # (6,)
    # logp_all[answers] would do, but its backward (index_put_ with accumulate) sums in a thread-
    # dependent order on CPU, so two identical steps could differ in the last bit; a one-hot matmul is
    # deterministic, which test_one_step_ds_with_zero_coefficients_equals_grpo relies on.
    logp = (torch.nn.functional.one_hot(answers, 6).to(logp_all.dtype) @ logp_all)[:, None]  # (B, T=1)
    old, mask = logp.detach(), torch.ones(n_groups * G, 1)
    a = loss.advantages(algo, correct, correct, old, mask, G, alpha=alpha, beta=beta, ds_form="seq")[0]
    denom = loss.normaliser(mask, "token-mean")
    entropy = -(logp_all.exp() * logp_all).sum().expand(n_groups * G, 1)  # (B, 1) H of the policy
    (loss.policy_loss(logp, old, a, mask, denom)
     + loss.entropy_term(algo, entropy, mask, "token-mean", denom, entropy_coef)).backward()
    with torch.no_grad():
        return torch.softmax(logits - lr * logits.grad, -1)


# correct .30 / .15 / .03 (the rarest), wrong .40 (the likely wrong answer) / .07 / .05
BASE = [.30, .15, .03, .40, .07, .05]
RAREST_CORRECT, LIKELY_WRONG = 2, 3


@pytest.mark.parametrize("ab", [0.1, 0.3, 0.5])
def test_one_step_ds_smooths_correct_and_sharpens_wrong(ab):
    base = torch.tensor(BASE)
    grpo = _one_step(BASE, "grpo", ab, ab)
    ds = _one_step(BASE, "ds-grpo", ab, ab)
    # same samples, same start: DS raises the rarest correct answer more than GRPO ...
    assert ds[RAREST_CORRECT] - base[RAREST_CORRECT] > grpo[RAREST_CORRECT] - base[RAREST_CORRECT]
    assert ds[RAREST_CORRECT] > base[RAREST_CORRECT]
    # ... and lowers the likely wrong answer at least as much
    assert ds[LIKELY_WRONG] - base[LIKELY_WRONG] <= grpo[LIKELY_WRONG] - base[LIKELY_WRONG]
    # ... and raises the total correct mass more
    assert ds[:3].sum() > grpo[:3].sum() > base[:3].sum()


def test_one_step_ds_with_zero_coefficients_equals_grpo():
    # the comparison above can fail: with alpha = beta = 0 the two steps are identical
    assert torch.equal(_one_step(BASE, "ds-grpo", 0., 0.), _one_step(BASE, "grpo", 0., 0.))


def test_one_step_bonus_is_still_weighted_by_selection():
    # A caveat worth knowing (not a bug): in ONE on-policy step the expected logit change from the
    # DS bonus is pi_b * (d_b - mean d), with d_b = alpha |log pi_b| on correct answers. pi |log pi|
    # peaks at pi = 1/e, so when a correct answer already holds ~.5 of the mass it still gets a
    # bigger logit push (.5 * .69) than a rare one (.03 * 3.5), and the resulting renormalisation
    # can leave the rarest correct answer slightly *lower* than under GRPO. The smoothing of
    # DS-Eq.4 is a statement about the KL-regularised optimum, not about every single step.
    # It does still sharpen the wrong answers and raise the total correct mass.
    base_list = [.50, .15, .03, .20, .07, .05]
    base = torch.tensor(base_list)
    grpo = _one_step(base_list, "grpo", .3, .3)
    ds = _one_step(base_list, "ds-grpo", .3, .3)
    assert ds[RAREST_CORRECT] < grpo[RAREST_CORRECT]  # the counterexample
    assert ds[LIKELY_WRONG] - base[LIKELY_WRONG] < grpo[LIKELY_WRONG] - base[LIKELY_WRONG]
    assert ds[:3].sum() > grpo[:3].sum()
