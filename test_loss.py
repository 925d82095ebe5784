"""GRPO and DS-GRPO losses by example: every number below is worked out by hand, next to
METHODS.md sections 2 (GRPO, Dr.GRPO) and 3 (DS-GRPO, DS-Eq.4 / DS-Eq.6).

Shapes as in loss.py: B responses (prompts x G, groups contiguous), T response tokens."""
import math

import pytest
import torch
from torch.testing import assert_close

import loss
import metrics

EPS = 1e-6  # the eps of group_advantages: A_i = (r_i - mean) / (std + eps)
TIGHT = dict(rtol=0, atol=1e-6)


def t(x):
    return torch.tensor(x, dtype=torch.float32)


# ============================================================================= GRPO advantages
def test_group_advantages_G2_by_hand():
    # rewards [1, 0]: mean .5, unbiased std sqrt(((.5)^2 + (.5)^2) / (2 - 1)) = sqrt(.5) = .7071
    # -> A = [.5, -.5] / .7071 = [.7071, -.7071]. The second group is the mirror image.
    a = 0.5 / (math.sqrt(0.5) + EPS)
    assert_close(loss.group_advantages(t([1, 0, 0, 1]), G=2), t([a, -a, -a, a]), **TIGHT)
    # with eps = 0 it is exactly 1/sqrt(2)
    s = 1 / math.sqrt(2)
    assert_close(loss.group_advantages(t([1, 0, 0, 1]), G=2, eps=0.0), t([s, -s, -s, s]), **TIGHT)


def test_group_advantages_G4_by_hand():
    # group 1, rewards [1, 0, 0, 0]: mean .25, deviations [.75, -.25, -.25, -.25],
    #   unbiased var (.5625 + 3 * .0625) / 3 = .25, std .5 -> A = [1.5, -.5, -.5, -.5]
    # group 2, rewards [1, 1, 0, 0]: mean .5, deviations +-.5, var 4 * .25 / 3 = 1/3,
    #   std .57735 -> A = +-.5 / .57735 = +-.86603
    r = t([1, 0, 0, 0, 1, 1, 0, 0])
    b = 0.5 / (math.sqrt(1 / 3) + EPS)
    expected = t([0.75 / (0.5 + EPS), -0.25 / (0.5 + EPS), -0.25 / (0.5 + EPS), -0.25 / (0.5 + EPS),
                  b, b, -b, -b])
    assert_close(loss.group_advantages(r, G=4), expected, **TIGHT)
    assert_close(loss.group_advantages(r, G=4, eps=0.0), t([1.5, -.5, -.5, -.5, .8660254, .8660254,
                                                           -.8660254, -.8660254]), **TIGHT)


def test_group_advantages_without_std_dr_grpo():
    # Dr.GRPO: only centred. [1,0,0,0] -> [.75,-.25,-.25,-.25]; [1,1,0,0] -> [.5,.5,-.5,-.5]
    r = t([1, 0, 0, 0, 1, 1, 0, 0])
    assert_close(loss.group_advantages(r, G=4, scale_rewards="none"),
                 t([.75, -.25, -.25, -.25, .5, .5, -.5, -.5]), **TIGHT)


def test_group_advantages_with_one_batch_std():
    # scale_rewards='batch' (TRL): centred in the group, divided by ONE std over the batch's 8 rewards.
    # Three 1s, five 0s: mean 3/8, unbiased var = (3 (5/8)^2 + 5 (3/8)^2) / 7 = (75/64 + 45/64) / 7 = 15/56
    r = t([1, 0, 0, 0, 1, 1, 0, 0])
    std = math.sqrt(15 / 56) + 1e-6  # 0.517549, + eps
    assert_close(loss.group_advantages(r, G=4, scale_rewards="batch"),
                 t([.75, -.25, -.25, -.25, .5, .5, -.5, -.5]) / std, **TIGHT)
    # so, unlike per-group scaling, a group's spread keeps its weight: [1,0,0,0]'s +.75 stays below [1,1,0,0]'s
    # ... whereas 'group' gives +1.5 and +.866
    with pytest.raises(ValueError, match="scale_rewards must be"):
        loss.group_advantages(r, G=4, scale_rewards="global")


def test_logp_mismatch_by_hand():
    # |log pi_rollout - log pi_train| on response tokens only: gaps .5 and 0 (the masked third token's 9 ignored)
    sample, train, mask = t([[-1.0, -2.0, 5.0]]), t([[-1.5, -2.0, -4.0]]), t([[1, 1, 0]])
    assert metrics.logp_mismatch(sample, train, mask) == (.25, .5)


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_equal_reward_groups_get_exactly_zero(scale_rewards):
    # all correct, all wrong, all format-score-only: no signal, A_i = 0 exactly (0 / (0 + eps))
    r = t([1, 1, 1, 1, 0, 0, 0, 0, .1, .1, .1, .1])
    adv = loss.group_advantages(r, G=4, scale_rewards=scale_rewards)
    assert torch.equal(adv, torch.zeros(12))


# ============================================================================= DS-Eq.6 pieces
def test_seq_logprob_is_length_normalised_mean_over_mask():
    # L_i = (1/|y_i|) sum_t l_{i,t}; tokens outside the mask (after EOS) do not count
    old_logp = t([[-1., -2., -3.], [-.5, -1.5, -9.], [-4., -8., -8.]]).requires_grad_()
    mask = t([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    L = loss.seq_logprob(old_logp, mask)
    assert_close(L, t([-2., -1., -4.]), **TIGHT)  # -6/3, -2/2, -4/1
    assert not L.requires_grad  # detached: no gradient through L_i (DS-Eq.6)


def test_ds_term_sign_and_size_by_hand():
    # DS-Eq.6: -alpha 1[r=1] L + beta 1[r=0] L, with L <= 0.
    correct = t([1, 0, 1, 0])
    L = t([-2., -1., -.1, -5.])
    # correct, L=-2:  -.1 * -2  = +.2   (bonus)        incorrect, L=-1: .3 * -1 = -.3 (penalty)
    # correct, L=-.1: -.1 * -.1 = +.01  (likely: small) incorrect, L=-5: .3 * -5 = -1.5
    d = loss.ds_term(correct, L, alpha=.1, beta=.3)
    assert_close(d, t([.2, -.3, .01, -1.5]), **TIGHT)
    assert (d[correct == 1] > 0).all() and (d[correct == 0] < 0).all()
    # the unlikely correct answer earns more than the likely one (smoothing among correct answers)
    assert d[0] > d[2]


# ============================================================================= loss.advantages
# One batch used for all the forms below: 2 prompts x G=2, T=3.
#   row 0: correct,   l = [-1, -2, -3],  mask [1,1,1] -> L = -2
#   row 1: incorrect, l = [-.5,-1.5,-7], mask [1,1,0] -> L = -1   (-7 is after EOS: ignored)
#   row 2: incorrect, l = [-4, -8, -8],  mask [1,0,0] -> L = -4
#   row 3: correct,   l = [-.2,-.4,-.6], mask [1,1,1] -> L = -.4
# Rewards [1, 0 | 0, 1]: GRPO A = [a, -a | -a, a] with a = .5 / (.7071 + eps) = .7071.
REWARDS = t([1, 0, 0, 1])
OLD_LOGP = t([[-1., -2., -3.], [-.5, -1.5, -7.], [-4., -8., -8.], [-.2, -.4, -.6]])
MASK = t([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
A = 0.5 / (math.sqrt(0.5) + EPS)
ALPHA, BETA = .1, .3


def adv(algo, ds_form="seq", alpha=ALPHA, beta=BETA, scale_rewards="group"):
    return loss.advantages(algo, REWARDS, REWARDS, OLD_LOGP, MASK, G=2, alpha=alpha, beta=beta,
                           ds_form=ds_form, scale_rewards=scale_rewards)[0]


def test_advantages_grpo_by_hand():
    a = A
    expected = t([[a, a, a], [-a, -a, 0], [-a, 0, 0], [a, a, a]])  # A_i on every response token
    assert_close(adv("grpo"), expected, **TIGHT)
    # alpha/beta are ignored by plain GRPO
    assert_close(adv("grpo", alpha=5., beta=5.), expected, **TIGHT)
    # Dr.GRPO: no std -> +-.5
    assert_close(adv("grpo", scale_rewards="none"),
                 t([[.5, .5, .5], [-.5, -.5, 0], [-.5, 0, 0], [.5, .5, .5]]), **TIGHT)


def test_advantages_ds_seq_by_hand():
    # DS-Eq.6, L_i length-normalised, same for every token of y_i:
    #   row 0 correct   L=-2:  -.1*-2  = +.2    row 1 incorrect L=-1: .3*-1 = -.3
    #   row 2 incorrect L=-4:  .3*-4   = -1.2   row 3 correct   L=-.4: -.1*-.4 = +.04
    a = A
    expected = t([[a + .2] * 3, [-a - .3, -a - .3, 0], [-a - 1.2, 0, 0], [a + .04] * 3])
    assert_close(adv("ds-grpo", "seq"), expected, **TIGHT)


def test_advantages_ds_token_by_hand():
    # per token: correct -.1 * l_t, incorrect .3 * l_t, masked tokens stay 0
    #   row 0: [.1, .2, .3]   row 1: [-.15, -.45, (masked)]   row 2: [-1.2, -, -]   row 3: [.02,.04,.06]
    a = A
    expected = t([[a + .1, a + .2, a + .3], [-a - .15, -a - .45, 0], [-a - 1.2, 0, 0],
                  [a + .02, a + .04, a + .06]])
    assert_close(adv("ds-grpo", "token"), expected, **TIGHT)


def test_advantages_ds_reward_by_hand():
    # the authors' final form: r_DS = r + ds_term(L) (DS-Eq.4 with pi_old), then centred, no std
    #   r_DS = [1 + .2, 0 - .3 | 0 - 1.2, 1 + .04] = [1.2, -.3 | -1.2, 1.04]
    #   group 1 mean .45 -> [.75, -.75];  group 2 mean -.08 -> [-1.12, 1.12]
    expected = t([[.75] * 3, [-.75, -.75, 0], [-1.12, 0, 0], [1.12] * 3])
    assert_close(adv("ds-grpo", "reward", scale_rewards="none"), expected, **TIGHT)
    # the std division is a separate choice; with it, each centred pair is divided by its std
    # (sqrt(2) |x| for a pair +-x), so G = 2 keeps only the sign: +-1/sqrt(2)
    s = 2 ** -.5
    assert_close(adv("ds-grpo", "reward"), t([[s] * 3, [-s, -s, 0], [-s, 0, 0], [s] * 3]), **TIGHT)


def test_advantages_dr_grpo_is_grpo_without_std():
    # algo 'dr-grpo' is the shorthand for scale_rewards="none", whatever scale_rewards says
    assert_close(adv("dr-grpo"), adv("grpo", scale_rewards="none"), **TIGHT)
    assert_close(adv("dr-grpo"), t([[.5, .5, .5], [-.5, -.5, 0], [-.5, 0, 0], [.5, .5, .5]]), **TIGHT)


def test_ds_with_zero_coefficients_is_grpo():
    for form in ("seq", "token"):
        assert_close(adv("ds-grpo", form, alpha=0., beta=0.), adv("grpo"), **TIGHT)
    # the reward form reduces to GRPO under the same normalisation, with or without the std
    for scale_rewards in ("group", "none"):
        assert_close(adv("ds-grpo", "reward", alpha=0., beta=0., scale_rewards=scale_rewards),
                     adv("grpo", scale_rewards=scale_rewards), **TIGHT)


def test_group_composition_by_hand():
    # G = 4, three groups: all correct, mixed (2 of 4), all wrong
    correct = t([1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    assert metrics.group_composition(correct, 4) == pytest.approx(
        {"groups_all_correct": 1 / 3, "groups_all_wrong": 1 / 3, "groups_mixed": 1 / 3})
    assert metrics.group_composition(t([0, 1, 0, 0]), 2) == {"groups_all_correct": 0.0, "groups_all_wrong": .5,
                                                          "groups_mixed": .5}


def test_invalid_ds_form_raises():
    with pytest.raises(ValueError, match="ds_form"):
        adv("ds-grpo", "sequence")


# ============================================================================= the surrogate
def test_clipped_surrogate_by_hand():
    # per-token loss -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A); eps_low .2, eps_high .28
    # (clip-higher): the clip range is [.8, 1.28].
    rho = t([1.1, 1.5, 0.5, 1.5, 0.5, 0.9, 1.25])
    A_ = t([1., 1., 1., -1., -1., -1., 2.])
    expected = t([
        -1.1,    # A>0, inside:           rho A = 1.1
        -1.28,   # A>0, above 1+eps_high: clipped to 1.28 (no further gain from pushing up)
        -0.5,    # A>0, below 1-eps_low:  min(.5, .8) = .5, NOT clipped (pessimistic bound)
        1.5,     # A<0, above:            min(-1.5, -1.28) = -1.5, NOT clipped
        0.8,     # A<0, below 1-eps_low:  min(-.5, -.8) = -.8, clipped
        0.9,     # A<0, inside
        -2.5,    # A>0, rho 1.25 is inside [.8, 1.28] (it would be clipped to 1.2 with eps_high .2)
    ])
    old = t([-1., -2., -.5, -3., -1., -.1, -2.])
    logp = (old + rho.log()).requires_grad_()
    per_tok = loss.clipped_surrogate(logp, old, A_, eps_low=.2, eps_high=.28)
    assert_close(per_tok, expected, **TIGHT)
    # gradient: d(-rho A)/dlogp = -rho A where not clipped, exactly 0 where clipped
    per_tok.sum().backward()
    clipped = torch.tensor([False, True, False, False, True, False, False])
    assert torch.equal(logp.grad[clipped], torch.zeros(2))
    assert_close(logp.grad[~clipped], (-rho * A_)[~clipped], **TIGHT)
    # symmetric clip 0.2: the last token is clipped at 1.2
    sym = loss.clipped_surrogate(logp.detach(), old, A_, eps_low=.2, eps_high=.2)
    assert_close(sym[-1], t(-2.4), **TIGHT)


def test_on_policy_surrogate_is_minus_advantage():
    # rho = 1 (one gradient step per batch): loss -A, gradient -A (REINFORCE with a group baseline)
    old = t([[-1., -2.], [-.3, -4.]])
    logp = old.clone().requires_grad_()
    A_ = t([[.5, .5], [-2., -2.]])
    per_tok = loss.clipped_surrogate(logp, old, A_)
    assert_close(per_tok, -A_, **TIGHT)
    per_tok.sum().backward()
    assert_close(logp.grad, -A_, **TIGHT)


def test_kl_k3():
    g = torch.Generator().manual_seed(0)
    p, q, on = -torch.rand(20, generator=g) * 3, -torch.rand(20, generator=g) * 3, torch.ones(20)
    assert_close(loss.kl_k3(p, q, on), torch.exp(q - p) - (q - p) - 1, **TIGHT)
    assert (loss.kl_k3(p, q, on) >= 0).all()
    assert torch.equal(loss.kl_k3(p, p, on), torch.zeros(20))
    # by hand: q - p = 1 -> e - 2 = .71828;  q - p = -1 -> 1/e = .36788
    assert_close(loss.kl_k3(t([0., 0.]), t([1., -1.]), t([1, 1])), t([math.e - 2, math.exp(-1)]), **TIGHT)
    # unbiased: sum_v pi_theta(v) k3(v) = KL(pi_theta || pi_ref) on a small categorical
    lp = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    lq = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    assert_close((lp.exp() * loss.kl_k3(lp, lq, torch.ones(7))).sum(), (lp.exp() * (lp - lq)).sum())


def test_kl_past_eos_cannot_make_the_loss_nan():
    # past EOS the log-probs are those of padding, which nothing bounds: here the policy gives the pad
    # token log-prob -200 and the reference 0, so exp(q - p) = exp(200) = inf in float32. Masked after the
    # exponential, inf * 0 = NaN would poison the loss and every gradient; masked before, that position is 0.
    mask = t([[1, 1, 0], [1, 0, 0]])
    logp = t([[-1., -2., -200.], [-.5, -200., -200.]]).requires_grad_()
    ref = t([[-1.5, -1., 0.], [-.5, 0., 0.]])
    adv = t([[1., 1., 1.], [-1., -1., -1.]]) * mask
    denom = loss.normaliser(mask, "token-mean")
    total = loss.policy_loss(logp, logp.detach(), adv, mask, denom, ref_logp=ref, kl_coef=.1)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logp.grad).all()
    # on-policy surrogate -(1 + 1 - 1)/3; k3 on the 3 response tokens: q - p = -.5, 1, 0
    k3 = [math.exp(-.5) + .5 - 1, math.e - 2, 0.]
    assert_close(total, t(-1 / 3 + .1 * sum(k3) / 3), **TIGHT)
    assert (logp.grad[mask == 0] == 0).all()


# ============================================================================= aggregation
PER_TOKEN = t([[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]])
WEIGHT = t([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # third row: no kept tokens at all


def test_token_mean_by_hand():
    denom = loss.normaliser(WEIGHT, "token-mean")
    assert denom.item() == 3  # kept tokens
    assert_close(loss.aggregate(PER_TOKEN, WEIGHT, "token-mean", denom), t(7 / 3), **TIGHT)  # (1+2+4)/3


def test_seq_mean_by_hand():
    denom = loss.normaliser(WEIGHT, "seq-mean")
    assert denom.item() == 2  # sequences with at least one kept token
    # mean over tokens within each sequence: 1.5, 4, (0 for the empty one); then / 2 sequences
    assert_close(loss.aggregate(PER_TOKEN, WEIGHT, "seq-mean", denom), t((1.5 + 4) / 2), **TIGHT)


def test_constant_by_hand():
    # Dr.GRPO as published: divide by n_seq * max_len whatever the lengths; 3 sequences, max_len 4
    denom = loss.normaliser(WEIGHT, "constant", max_len=4)
    assert denom.item() == 12
    assert_close(loss.aggregate(PER_TOKEN, WEIGHT, "constant", denom), t(7 / 12), **TIGHT)  # (1+2+4)/12


def test_published_dr_grpo_gives_every_token_the_same_weight():
    # The batch of the advantage tests (lengths 3, 2, 1, 3; rewards [1, 0 | 0, 1]) with 'dr-grpo'
    # advantages A = +-.5, on-policy (rho = 1), so the per-token loss is -A and d loss / d logp = -A / denom.
    #   'constant' (max_len 3): denom 4 * 3 = 12 -> every token gets -+.5 / 12 = -+1/24, short or long.
    #   'seq-mean': -A / (|y_i| * 4): the 1-token wrong answer (row 2) gets .5 / 4 = .125 per token, the
    #   2-token wrong answer (row 1) .5 / 8 = .0625: a longer wrong answer is penalised less per token,
    #   the length bias that Dr.GRPO removes.
    #   'token-mean': -A / 9 for every token, but 9 is this batch's token count, so the same token weighs
    #   more in a batch of short responses than in a batch of long ones.
    a = loss.advantages("dr-grpo", REWARDS, REWARDS, OLD_LOGP, MASK, G=2)[0]

    def grad(agg):
        logp = OLD_LOGP.clone().requires_grad_()
        loss.policy_loss(logp, OLD_LOGP, a, MASK, loss.normaliser(MASK, agg, max_len=3), agg).backward()
        return logp.grad

    s = 1 / 24
    assert_close(grad("constant"), t([[-s, -s, -s], [s, s, 0], [s, 0, 0], [-s, -s, -s]]), **TIGHT)
    assert_close(grad("seq-mean")[1:3, 0], t([.0625, .125]), **TIGHT)
    assert_close(grad("token-mean")[1:3, 0], t([.5 / 9, .5 / 9]), **TIGHT)
    # and the loss itself: -(3 * .5 - 2 * .5 - 1 * .5 + 3 * .5) / 12 = -1.5 / 12
    denom = loss.normaliser(MASK, "constant", max_len=3)
    assert_close(loss.policy_loss(OLD_LOGP, OLD_LOGP, a, MASK, denom, "constant"), t(-.125), **TIGHT)


def test_bad_agg_raises():
    with pytest.raises(ValueError):
        loss.aggregate(PER_TOKEN, WEIGHT, "sum", t(1.))
    with pytest.raises(ValueError, match="agg must be one of"):
        loss.normaliser(WEIGHT, "sum")


# ============================================================================= diagnostics
def test_ratio_stats_by_hand():
    # the tokens of test_clipped_surrogate_by_hand, eps_low .2, eps_high .28; the last token is masked out
    rho = t([1.1, 1.5, 0.5, 1.5, 0.5, 0.9, 1.25])
    A_ = t([1., 1., 1., -1., -1., -1., 2.])
    mask = t([1, 1, 1, 1, 1, 1, 0])
    old = t([-1., -2., -.5, -3., -1., -.1, -2.])
    # clipped (no gradient) low: rho .5 with A < 0 (token 4) only; token 2 has rho .5 but A > 0: not clipped
    # clipped high: rho 1.5 with A > 0 (token 1) only; token 3 has rho 1.5 but A < 0: not clipped
    # KL: (rho - 1) - log rho per token: 1.1 -> .0046898, 1.5 -> .0945349 (twice), .5 -> .1931472 (twice),
    #     .9 -> .0053605; sum .5854145 (the masked 1.25 does not count)
    low, high, kl = metrics.ratio_stats(old + rho.log(), old, A_, mask, eps_low=.2, eps_high=.28).tolist()
    assert (low, high) == (1.0, 1.0)
    assert abs(kl - .5854145) < 1e-5
    # on-policy: rho = 1, nothing clipped, KL 0
    assert metrics.ratio_stats(old, old, A_, mask).tolist() == [0., 0., 0.]


def test_ratio_stats_kl_is_unbiased_for_kl_old_theta():
    # samples come from pi_old: sum_v pi_old(v) ((rho - 1) - log rho) = KL(pi_old || pi_theta)
    g = torch.Generator().manual_seed(4)
    lo = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    lt = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    one = torch.ones(1)
    per_v = torch.stack([metrics.ratio_stats(lt[v:v + 1], lo[v:v + 1], one, one)[2] for v in range(7)])
    assert_close((lo.exp() * per_v).sum(), (lo.exp() * (lo - lt)).sum())


def test_zero_advantage_frac_by_hand():
    # G = 4: all correct, all wrong, all format-score-only (equal: no signal), mixed -> 3 of 4 groups
    r = t([1, 1, 1, 1, 0, 0, 0, 0, .1, .1, .1, .1, 1, 0, 0, 1])
    assert metrics.zero_advantage_frac(r, 4).item() == .75
    assert metrics.zero_advantage_frac(r, 2).item() == .75  # pairs: 6 equal of 8


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean"])
@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_micro_batches_with_full_normaliser_equal_full_batch(agg, kl_coef):
    # gradient accumulation: each micro-batch divides by the WHOLE batch's normaliser, so the sum of
    # micro-batch losses (and of their gradients) is the full-batch loss (and gradient).
    g = torch.Generator().manual_seed(1)
    B, T = 8, 5
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    logp_full = (old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)).requires_grad_()
    ref = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    lengths = torch.tensor([5, 1, 3, 4, 2, 5, 3, 1])
    weight = (torch.arange(T)[None] < lengths[:, None]).double()
    A_ = torch.randn(B, generator=g, dtype=torch.float64)[:, None] * weight
    kw = dict(agg=agg, eps_low=.2, eps_high=.28, ref_logp=ref, kl_coef=kl_coef)
    denom = loss.normaliser(weight, agg)

    full = loss.policy_loss(logp_full, old, A_, weight, denom, **kw)
    full.backward()

    logp_micro = logp_full.detach().clone().requires_grad_()
    total = 0.0
    for s in (slice(0, 3), slice(3, 4), slice(4, 8)):  # uneven micro-batches
        part = loss.policy_loss(logp_micro[s], old[s], A_[s], weight[s], denom, agg=agg, eps_low=.2,
                                eps_high=.28, ref_logp=ref[s], kl_coef=kl_coef)
        part.backward()
        total = total + part.detach()
    assert_close(total, full.detach(), rtol=0, atol=1e-12)
    assert_close(logp_micro.grad, logp_full.grad, rtol=0, atol=1e-12)
