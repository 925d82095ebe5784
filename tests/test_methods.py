"""The baselines DS-GRPO is compared with, by example: entropy bonus / penalty (METHODS.md section 4,
"uniform heuristics") and the token-selection methods 20-Entropy, STAPO/S2T and ICT (section 5).
Every number is worked out by hand on tiny tensors (2 groups, vocab 3), as in ../test_loss.py."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import loss
import model
from ict import js_uniqueness
from model import char_tokenizer, tiny_model
from test_loss import TIGHT, t
from test_loss_gradients import BASE, _one_step

LOG2 = math.log(2)
FRACS = {"top_entropy_frac": .2, "stapo_q": .75, "ict_frac": .1}  # train.py's defaults


# ============================================================================= entropy bonus / penalty
ENT = t([[1., 2., 3.], [4., 5., 6.]])
ENT_W = t([[1, 1, 0], [1, 0, 0]])  # 3 response tokens


@pytest.mark.parametrize("algo, sign", [("entropy-bonus", -1), ("entropy-penalty", 1), ("grpo", 0),
                                        ("ds-grpo", 0), ("20-entropy", 0)])
def test_entropy_term_by_hand(algo, sign):
    # token-mean: H_bar = (1 + 2 + 4) / 3 = 7/3;  seq-mean: (1.5 + 4) / 2 = 2.75.  c = .1
    # bonus: loss += -c H_bar = -.2333;  penalty: loss += +c H_bar = +.2333;  other algos: 0
    for agg, h_bar in (("token-mean", 7 / 3), ("seq-mean", 2.75)):
        denom = loss.normaliser(ENT_W, agg)
        assert_close(loss.entropy_term(algo, ENT, ENT_W, agg, denom, .1), t(sign * .1 * h_bar), **TIGHT)
    # its gradient w.r.t. H: sign * c / 3 on the 3 response tokens, 0 elsewhere
    h = ENT.clone().requires_grad_()
    term = loss.entropy_term(algo, h, ENT_W, "token-mean", loss.normaliser(ENT_W, "token-mean"), .1)
    if sign:
        term.backward()
        assert_close(h.grad, sign * .1 / 3 * ENT_W, **TIGHT)


@pytest.mark.parametrize("algo", ["entropy-bonus", "entropy-penalty"])
def test_entropy_step_raises_or_lowers_a_softmax_entropy(algo):
    # one SGD step on logits of a 3-way softmax with loss = entropy_term(H): gradient descent on -c H
    # raises H (bonus), on +c H lowers it (penalty)
    logits = t([2., 0., -1.]).requires_grad_()
    logp_all = torch.log_softmax(logits, -1)
    h = -(logp_all.exp() * logp_all).sum().view(1, 1)  # (B=1, T=1)
    w = torch.ones(1, 1)
    loss.entropy_term(algo, h, w, "token-mean", loss.normaliser(w, "token-mean"), .1).backward()
    p_new = torch.softmax(logits.detach() - 1.0 * logits.grad, -1)
    h_new = -(p_new * p_new.log()).sum()
    assert (h_new > h.item()) if algo == "entropy-bonus" else (h_new < h.item())


def test_entropy_term_micro_batches_sum_to_full_batch():
    g = torch.Generator().manual_seed(3)
    h = torch.rand(6, 4, generator=g, dtype=torch.float64).requires_grad_()
    w = (torch.arange(4)[None] < torch.tensor([4, 1, 3, 2, 4, 1])[:, None]).double()
    for agg in ("token-mean", "seq-mean"):
        denom = loss.normaliser(w, agg)
        full = loss.entropy_term("entropy-bonus", h, w, agg, denom, .3)
        parts = sum(loss.entropy_term("entropy-bonus", h[s], w[s], agg, denom, .3)
                    for s in (slice(0, 2), slice(2, 5), slice(5, 6)))
        assert_close(parts, full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("coef", [0.1, 1.0])
def test_one_step_entropy_bonus_spreads_mass_onto_wrong_answers_ds_does_not(coef):
    # test_loss's 6-answer softmax policy (answers 0-2 correct, 3-5 wrong), one correct answer dominant:
    # correct .6 / .2 / .1, wrong .05 / .03 / .02 (total wrong .1). Same seeded samples for all three.
    # The entropy bonus raises the logits of every answer rarer than exp(-H), which here are the wrong
    # ones: compared with GRPO it always leaves MORE mass on wrong answers, and once the bonus is as
    # large as the GRPO signal (c = 1) the wrong mass rises above where it started. DS (DS-Eq.6,
    # alpha = beta = .3, 'seq') only sharpens wrong answers: it ends with LESS wrong mass than GRPO.
    base_list = [.6, .2, .1, .05, .03, .02]
    wrong0 = sum(base_list[3:])
    grpo = _one_step(base_list, "grpo", 0., 0.)[3:].sum()
    bonus = _one_step(base_list, "entropy-bonus", 0., 0., entropy_coef=coef)[3:].sum()
    ds = _one_step(base_list, "ds-grpo", .3, .3)[3:].sum()
    assert bonus > grpo > ds
    assert ds < wrong0
    if coef == 1.0:
        assert bonus > wrong0  # .1062 > .1 (ds: .0898)
    # and the DS step is unaffected by entropy_coef: it adds no entropy term
    assert torch.equal(_one_step(BASE, "ds-grpo", .3, .3, entropy_coef=coef), _one_step(BASE, "ds-grpo", .3, .3))


# ============================================================================= 20-Entropy
# 2 groups x G=2, T=4; lengths 4, 2, 3, 1 -> 10 response tokens; dead tokens get a high entropy that
# must be ignored. k = ceil(.2 * 10) = 2.
H20 = t([[.1, .9, .3, .5],
         [.7, .2, 9., 9.],
         [.7, .4, .6, 5.],
         [.05, 9., 9., 9.]])
M20 = t([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])


def test_entropy_keep_mask_by_hand_with_a_tie():
    # alive entropies sorted: .9, .7, .7, .6, .5, ... ; the 2nd largest is .7, tied with another .7:
    # ties at the threshold are all kept -> 3 tokens (.9 and both .7), not 2
    keep = loss.entropy_keep_mask(H20, M20, frac=.2)
    assert keep.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert loss.normaliser(keep, "token-mean").item() == 3  # only kept tokens count
    assert loss.normaliser(keep, "seq-mean").item() == 3  # rows 0, 1, 2 have a kept token
    # without the tie (row 2's .7 -> .65): exactly k = 2 tokens
    h = H20.clone()
    h[2, 0] = .65
    assert loss.entropy_keep_mask(h, M20, frac=.2).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0] * 4, [0] * 4]
    # frac .5: k = 5 -> threshold .5 -> .9, .7, .7, .6, .5
    assert loss.entropy_keep_mask(H20, M20, frac=.5).tolist() == [[0, 1, 0, 1], [1, 0, 0, 0], [1, 0, 1, 0],
                                                                  [0, 0, 0, 0]]
    # the dispatcher gives the same mask
    assert torch.equal(loss.token_weights("20-entropy", M20, entropy=H20, **FRACS), keep)


def test_ceil_frac_is_robust_to_float_error():
    # 0.1 * 30 = 3.0000000000000004 and 0.2 * 15 = 3.0000000000000004 in floating point: k must be 3
    assert loss._ceil_frac(.1, 30) == 3 and loss._ceil_frac(.2, 15) == 3 and loss._ceil_frac(.2, 16) == 4
    assert loss._ceil_frac(.1, torch.tensor([30, 10, 11, 0])).tolist() == [3, 1, 2, 0]


def test_20_entropy_loss_only_kept_tokens_learn_and_normaliser_counts_them():
    # on-policy (rho = 1): d loss / d logp_{i,t} = -A_i * keep_{i,t} / (number of kept tokens = 3)
    A_i = t([1., -1., .5, -.5])
    adv = A_i[:, None] * M20
    keep = loss.entropy_keep_mask(H20, M20)
    old = -torch.ones(4, 4)
    logp = old.clone().requires_grad_()
    loss.policy_loss(logp, old, adv, keep, loss.normaliser(keep, "token-mean")).backward()
    assert_close(logp.grad, t([[0, -1 / 3, 0, 0], [1 / 3, 0, 0, 0], [-.5 / 3, 0, 0, 0], [0, 0, 0, 0]]), **TIGHT)


# ============================================================================= STAPO / S2T
# Rewards [1, 0 | .1, 0] (G = 2): A > 0 for row 0 (correct) and row 2 (format score only, NOT correct).
# p = pi_old(y_t); "low" means p < tau_p = .002. T = 4, lengths 4, 3, 3, 1.
#   row 0 correct,   A>0: p [.001, .5, .001, .001]   H [.4, .1, .9, .2]  low-p: t0 (.4), t2 (.9), t3 (.2)
#   row 1 wrong,     A<0: p [.001, .001, .001, -]    H [.1, .1, .1, -]   (A < 0: never silenced)
#   row 2 format,    A>0: p [.001, .001, .3, .001*]  H [.68, .3, .1, 0]  (* dead: ignored)
#   row 3 wrong,     A<0: p [.0001, -, -, -]         H [.05, ...]
# tau_h = torch.quantile of the low-p entropies of CORRECT responses, {.2, .4, .9}, with its linear
# interpolation at position q (n - 1):  q = .75 -> 1.5 -> .4 + .5 (.9 - .4) = .65
#                                       q = .8  -> 1.6 -> .4 + .6 (.9 - .4) = .70
ST_REWARDS = t([1, 0, .1, 0])
ST_CORRECT = (ST_REWARDS == 1).float()
ST_MASK = t([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
ST_P = t([[.001, .5, .001, .001], [.001, .001, .001, 1], [.001, .001, .3, .001], [.0001, 1, 1, 1]])
ST_H = t([[.4, .1, .9, .2], [.1, .1, .1, 0], [.68, .3, .1, 0], [.05, 0, 0, 0]])


def stapo(q, p=ST_P):
    adv = loss.advantages("grpo", ST_REWARDS, ST_CORRECT, p.log(), ST_MASK, G=2)[0]  # plain GRPO A_i
    return loss.stapo_keep_mask(p.log() * ST_MASK, ST_H, adv, ST_CORRECT, ST_MASK, q=q)


def test_stapo_tau_h_is_torch_quantile_linear():
    assert_close(torch.quantile(t([.4, .9, .2]), .75), t(.65), **TIGHT)
    assert_close(torch.quantile(t([.4, .9, .2]), .8), t(.70), **TIGHT)


def test_stapo_keep_mask_by_hand():
    # q = .75, tau_h = .65: silenced = A > 0 and p < .002 and H < .65
    #   row 0: t0 (H .4) and t3 (H .2); t2 has H .9 >= tau_h; t1 is not low-p
    #   row 2: t1 (H .3); t0 has H .68 >= .65, so it stays
    keep = stapo(.75)
    assert keep.tolist() == [[0, 1, 1, 0], [1, 1, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0]]
    assert loss.normaliser(keep, "token-mean").item() == 11 - 3  # 11 response tokens, 3 silenced
    # q = .8, tau_h = .70: row 2's t0 (H .68) is now below it and silenced too
    assert stapo(.8).tolist() == [[0, 1, 1, 0], [1, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    # the dispatcher passes q through
    adv = loss.advantages("grpo", ST_REWARDS, ST_CORRECT, ST_P.log(), ST_MASK, G=2)[0]
    assert torch.equal(loss.token_weights("stapo", ST_MASK, ST_H, ST_P.log() * ST_MASK, adv, ST_CORRECT,
                                          **{**FRACS, "stapo_q": .8}), stapo(.8))


def test_stapo_without_low_prob_correct_tokens_silences_nothing():
    # row 0 (the only correct response) has no p < tau_p: there is no tau_h, nothing is silenced,
    # even though row 2 (A > 0) still has low-probability tokens
    p = ST_P.clone()
    p[0] = .5
    assert torch.equal(stapo(.75, p), ST_MASK)


# ============================================================================= ICT
def test_js_divergence_by_hand():
    e0, e1, u3 = t([1., 0., 0.]), t([0., 1., 0.]), t([1 / 3, 1 / 3, 1 / 3])
    assert_close(loss.js_divergence(u3, u3), t(0.), **TIGHT)  # identical -> 0
    assert_close(loss.js_divergence(e0, e1), t(LOG2), **TIGHT)  # disjoint -> log 2, the maximum
    # e0 vs uniform: m = [2/3, 1/6, 1/6]; KL(e0||m) = log 3/2, KL(u||m) = 1/3 log 1/2 + 2/3 log 2 = 1/3 log 2
    assert_close(loss.js_divergence(e0, u3), t(.5 * math.log(1.5) + LOG2 / 6), **TIGHT)
    # symmetric, and batched over leading dims
    p = torch.softmax(torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(0)), -1)
    q = torch.softmax(torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1)), -1)
    assert_close(loss.js_divergence(p, q), loss.js_divergence(q, p), **TIGHT)
    assert ((loss.js_divergence(p, q) >= 0) & (loss.js_divergence(p, q) <= LOG2)).all()


def test_group_uniqueness_by_hand_and_dead_responses():
    # one group, G = 3, vocab 3, T = 3.   alive:  t0: all three;  t1: responses 0, 1;  t2: response 0 only
    #   t0: one-hots e0, e1, e2 -> P_avg = uniform -> each u = JS(e_a || u) = 1/2 log 3/2 + 1/6 log 2
    #   t1: e0, e1 alive, response 2 dead (its garbage distribution e2 must not count): P_avg over the
    #       ALIVE ones = [.5, .5, 0] -> u = JS(e0 || [.5,.5,0]): m = [.75,.25,0],
    #       KL(e0||m) = log 4/3, KL(avg||m) = .5 log(2/3) + .5 log 2 = .5 log 4/3  -> u = 3/4 log 4/3
    #       (for G = 2 disjoint one-hots u is 3/4 log 4/3 = .2158, not log 2: P_avg contains pi_i itself)
    #   t2: a single alive response: P_avg = pi -> u = 0;  dead tokens: u = 0
    e = torch.eye(3)
    probs = torch.stack([torch.stack([e[0], e[0], t([.2, .3, .5])]),
                         torch.stack([e[1], e[1], e[2]]),
                         torch.stack([e[2], e[2], e[1]])])  # (G=3, T=3, V=3)
    alive = t([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    a, b = .5 * math.log(1.5) + LOG2 / 6, .75 * math.log(4 / 3)
    assert_close(loss.group_uniqueness(probs, alive), t([[a, b, 0], [a, b, 0], [a, 0, 0]]), **TIGHT)
    # had the dead response counted at t1, P_avg would be uniform and u would be a, not b
    assert abs(a - b) > .1
    # identical distributions everywhere -> u = 0
    same = t([.2, .3, .5]).expand(3, 3, 3)
    assert_close(loss.group_uniqueness(same, torch.ones(3, 3)), torch.zeros(3, 3), **TIGHT)


def test_ict_keep_mask_by_hand():
    # k_i = ceil(.1 |y_i|), ties with the k_i-th largest kept; dead tokens never kept, whatever their u
    u = torch.zeros(4, 11)
    u[0] = t([.1, .5, .2, .4, .3, .05, .6, .01, .02, .03, .04])  # |y| = 11 -> k = 2: .6 and .5
    u[1, :5] = t([.3, .1, .3, .2, .0])                            # |y| = 5  -> k = 1, tie at .3: both kept
    u[1, 5:] = .9                                                 #   (dead, high u: ignored)
    u[2, :10] = torch.arange(10) / 100                            # |y| = 10 -> k = 1 (.1 * 10 = 1): .09
    mask = torch.zeros(4, 11)
    for i, n in enumerate([11, 5, 10, 0]):                        # row 3: empty, nothing kept
        mask[i, :n] = 1
    keep = loss.ict_keep_mask(u, mask, frac=.1)
    expected = torch.zeros(4, 11)
    expected[0, [1, 6]] = 1
    expected[1, [0, 2]] = 1
    expected[2, 9] = 1
    assert torch.equal(keep, expected)
    assert loss.normaliser(keep, "token-mean").item() == 5  # normalise over kept tokens only
    assert torch.equal(loss.token_weights("ict", mask, u=u, **FRACS), keep)


# ============================================================================= the masked methods keep GRPO's zero
@pytest.mark.parametrize("algo", ["20-entropy", "stapo", "ict", "grpo", "dr-grpo", "entropy-bonus"])
def test_zero_advantage_groups_give_zero_policy_gradient(algo):
    # G = 4: group 0 all correct, group 1 all wrong, group 2 mixed. Masks keep tokens in every group,
    # but A_i = 0 in the first two, so their tokens get exactly zero policy gradient.
    g = torch.Generator().manual_seed(5)
    rewards = t([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1])
    mask = torch.ones(12, 5)
    old = torch.where(torch.rand(12, 5, generator=g) < .3, math.log(.001), -torch.rand(12, 5, generator=g))
    entropy, u = torch.rand(12, 5, generator=g), torch.rand(12, 5, generator=g) * LOG2
    adv = loss.advantages(algo, rewards, rewards, old, mask, G=4)[0]
    weight = loss.token_weights(algo, mask, entropy, old, adv, rewards, u, **FRACS)
    assert weight[:8].sum() > 0 and weight[8:].sum() > 0  # tokens are kept in every group
    logp = old.clone().requires_grad_()
    loss.policy_loss(logp, old, adv, weight, loss.normaliser(weight, "token-mean")).backward()
    assert torch.equal(logp.grad[:8], torch.zeros(8, 5))
    kept = weight[8:].bool()
    assert (logp.grad[8:][kept] != 0).all() and (logp.grad[8:][~kept] == 0).all()


# ============================================================================= js_uniqueness on a model
def test_js_uniqueness_chunked_equals_direct(monkeypatch):
    tok = char_tokenizer()
    torch.manual_seed(0)
    m = tiny_model(tok, n_layer=1, n_embd=32, n_head=2).eval()
    V, G, T = len(tok), 2, 8
    prompts = ["Use 3 5 7 to make 22.\n"] * 2 + ["Use 1 2 to make 3.\n"] * 2  # 2 groups of G = 2
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    resp = torch.tensor([tok(r).input_ids for r in ["<answer>", "3*5+7</a", "1+2</ans", "(1+2)*3<"]])
    mask = torch.ones(4, T, dtype=torch.long)
    mask[1, 5:] = 0  # response 1 ends after 5 tokens
    mask[3, 2:] = 0  # response 3 after 2: from t = 2 on, response 2 is alone in its group -> u = 0
    ids = torch.cat([enc.input_ids, resp.masked_fill(mask == 0, tok.pad_token_id)], 1)
    att = torch.cat([enc.attention_mask, mask], 1)
    P = enc.input_ids.shape[1]

    # direct: full (B, T, V) float64 distributions, P_avg over the alive responses, JS by its definition
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, P - 1:-1].double()
    probs = torch.softmax(logits / .7, -1)  # (B, T, V)
    ref = torch.zeros(4, T, dtype=torch.float64)
    for g0 in (0, 2):
        for s in range(T):
            rows = [g0 + j for j in range(G) if mask[g0 + j, s]]
            p_avg = probs[rows, s].mean(0)
            for i in rows:
                p, mid = probs[i, s], .5 * (probs[i, s] + p_avg)
                ref[i, s] = .5 * (p * (p / mid).log()).sum() + .5 * (p_avg * (p_avg / mid).log()).sum()

    shapes = []
    inner = loss.group_uniqueness
    monkeypatch.setattr(loss, "group_uniqueness", lambda pr, al: shapes.append(tuple(pr.shape)) or inner(pr, al))
    u_one = js_uniqueness(m, ids, att, P, mask, G, .7)
    assert shapes == [(G, T, V)] * 2  # default budget: one chunk per group
    shapes.clear()
    monkeypatch.setattr(model, "MAX_LOGITS_PER_CHUNK", 3 * G * V)  # 3 positions per chunk
    u = js_uniqueness(m, ids, att, P, mask, G, .7)
    assert shapes == [(G, 3, V), (G, 3, V), (G, 2, V)] * 2  # it really chunks
    assert_close(u.double(), ref, rtol=1e-5, atol=1e-6)
    assert_close(u, u_one, rtol=1e-5, atol=1e-7)
    assert (u[mask == 0] == 0).all() and (u[2, 2:] == 0).all()
    # t = 0: a group's responses share the prompt, so the same distribution -> u = 0; then they differ
    assert_close(u[:, 0], torch.zeros(4), rtol=0, atol=1e-6)
    assert (u[0, 1:5] > 0).all()
    assert (u <= LOG2).all()
