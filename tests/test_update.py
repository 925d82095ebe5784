"""update.py, the update step: micro-batches sorted by response length and cut to their longest response
(worked example, and the same loss and gradient as uncut, unsorted micro-batches), and DGG's gate (gate.py)
on a hand-computed sequence of gradient energies, with no optimizer step when it fires."""
import copy
import math

import pytest
import torch

import checkpoint
import gate
import loss
import metrics
import parallel
import update
from model import char_tokenizer, response_logprobs, tiny_model


# ============================================================================= micro-batches
def test_micro_batches_worked_example():
    # 4 responses of lengths 2, 5, 1, 3 (T = 6 columns), prompts of P = 4 columns, left-padded: row 2 has 3
    # padding columns, row 3 has 1, the others none. Micro-batches of 2, longest responses first:
    #   rows 1, 3 (lengths 5, 3): keep 5 response columns; both rows use prompt column 0 -> first = 0
    #   rows 0, 2 (lengths 2, 1): keep 2; row 0 starts at column 0 -> first = 0
    # and with rows 2, 3 alone (size 1 pieces of the sort): row 2 starts at column 3, row 3 at column 1
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]).float()
    att = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1], [0, 1, 1, 1]])
    got = [(r.tolist(), first, T) for r, first, T in update.micro_batches(mask, att, 4, 2)]
    assert got == [([1, 3], 0, 5), ([0, 2], 0, 2)]
    got = [(r.tolist(), first, T) for r, first, T in update.micro_batches(mask, att, 4, 1)]
    assert got == [([1], 0, 5), ([3], 1, 3), ([0], 0, 2), ([2], 3, 1)]
    # trim=False: today's micro-batches, in order and uncut
    got = [(r.tolist(), first, T) for r, first, T in update.micro_batches(mask, att, 4, 3, trim=False)]
    assert got == [([0, 1, 2], 0, 6), ([3], 0, 6)]


def batch(seed=0):
    """A tiny policy and a batch of 3 groups of 4 responses of varied lengths, left-padded prompts, ratios != 1."""
    torch.manual_seed(seed)
    tok = char_tokenizer()
    model = tiny_model(tok, n_layer=1, n_embd=32, n_head=2)
    B, G, P, T = 12, 4, 6, 9
    ids = torch.randint(4, len(tok), (B, P + T))
    att = torch.ones(B, P + T, dtype=torch.long)
    att[:5, :2] = 0  # left padding
    att[5:7, :4] = 0
    mask = (torch.arange(T) < torch.randint(1, T + 1, (B, 1))).float()  # (B, T)
    mask[0, :] = 0
    mask[0, :2] = 1  # a short response and ...
    mask[1, :] = 1  # ... one that runs to the end
    att[:, P:] = mask.long()
    rewards = (torch.rand(B) < 0.5).float()
    with torch.no_grad():
        old = (response_logprobs(model, ids, att, P)[0] - 0.05 * torch.rand(B, T)) * mask
    adv = loss.advantages("ds-grpo", rewards, rewards, old, mask, G, 1.0, 0.1)[0]
    return model, ids, att, P, mask, adv, old


def micro_loss_for(mask, adv, old, denom, agg="token-mean"):
    def micro_loss(rows, T, logp, entropy):  # train.py's, without the options
        m, a, o = mask[rows, :T], adv[rows, :T], old[rows, :T]
        objective = loss.policy_loss(logp, o, a, m, denom, agg) + loss.entropy_term("entropy-bonus", entropy, m, agg,
                                                                                    denom, 0.01)
        return objective, metrics.ratio_stats(logp, o, a, m)
    return micro_loss


class Recorder:
    """An optimizer that records the gradient it is given and moves nothing."""
    def __init__(self, params):
        self.params, self.grads = list(params), []

    def step(self):
        self.grads.append([p.grad.clone() for p in self.params])

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean"])
def test_sorted_trimmed_micro_batches_give_the_same_loss_and_gradient(agg):
    model, ids, att, P, mask, adv, old = batch()
    denom = loss.normaliser(mask, agg)
    results = {}
    for trim in (False, True):
        rec = Recorder(model.parameters())
        res = update.update(parallel.wrap(model, None, "cpu"), model, rec, ids, att, P, mask,
                            micro_loss_for(mask, adv, old, denom, agg), micro_batch_size=5, trim=trim)
        results[trim] = res, rec.grads[0]
    (plain, g_plain), (cut, g_cut) = results[False], results[True]
    assert cut["loss"] == pytest.approx(plain["loss"], rel=1e-5, abs=1e-7)
    assert cut["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-5)
    torch.testing.assert_close(cut["ratio_sums"], plain["ratio_sums"], rtol=1e-5, atol=1e-6)
    for a, b in zip(g_cut, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert plain["grad_norm"] > 0 and cut["passes"] == plain["passes"] == 1


# ============================================================================= DGG's gate
def run_gate(seq, size=3, tau=0.5, signal="energy"):
    """(fire, z) for each (first pass?, g) of seq, through one state; and the state after."""
    state = gate.new_state()
    return [gate.decide(state, g, first, tau, size, signal) for first, g in seq], state


def test_gate_worked_example_energy():
    # window 3, tau 0.5, the z-score of g itself:
    #   batch 1, pass 1: g = 1   window [] (not full)        -> applied, window [1]
    #            pass 2: g = 2   not full                     -> applied, window [1, 2]
    #   batch 2, pass 1: g = 3   not full                     -> applied, window [1, 2, 3]
    #            pass 2: g = 2.5 mean 2, std 1: z = 0.5, not > 0.5  -> applied, window [2, 3, 2.5]
    #            pass 3: g = 4   mean 2.5, std 0.5: z = 3   -> FIRES; the window keeps [2, 3, 2.5]
    #   batch 3, pass 1: g = 10  z = (10 - 2.5) / 0.5 = 15, but a first pass is never gated -> window [3, 2.5, 10]
    got, state = run_gate([(True, 1.0), (False, 2.0), (True, 3.0), (False, 2.5), (False, 4.0), (True, 10.0)])
    assert got == [(False, None), (False, None), (False, None), (False, 0.5), (True, 3.0), (False, 15.0)]
    assert state == {"window": [3.0, 2.5, 10.0], "prev": 10.0}


def test_gate_worked_example_delta():
    # the z-score of the change since the last applied pass, d = g - g_prev; window 2, tau 1:
    #   g = 1 (first ever: no d)            -> prev 1
    #   g = 3: d = 2, window []              -> window [2], prev 3
    #   g = 2: d = -1                        -> window [2, -1] (full), prev 2
    #   g = 6: d = 4, mean 0.5, std sqrt(4.5) = 2.1213: z = 1.6499 > 1 -> FIRES; prev stays 2
    #   g = 2.5 (a new batch's first pass): d = 0.5 against prev 2, z = 0 -> window [-1, 0.5], prev 2.5
    got, state = run_gate([(True, 1.0), (False, 3.0), (False, 2.0), (False, 6.0), (True, 2.5)], size=2, tau=1.0,
                          signal="delta")
    fires, zs = zip(*got)
    assert fires == (False, False, False, True, False)
    assert zs[:3] == (None, None, None)
    assert zs[3] == pytest.approx(3.5 / math.sqrt(4.5)) and zs[4] == pytest.approx(0.0)
    assert state == {"window": [-1.0, 0.5], "prev": 2.5}


def test_gate_never_fires_before_the_window_is_full_nor_on_a_first_pass():
    # a huge spike, but only 2 of 3 signals seen; then a full window and a spike on a first pass
    got, _ = run_gate([(True, 1.0), (False, 1e9)], tau=0.0)
    assert [f for f, _ in got] == [False, False]
    got, _ = run_gate([(True, 1.0), (False, 1.1), (False, 0.9), (True, 1e9)], tau=0.0)
    assert [f for f, _ in got] == [False, False, False, False] and got[-1][1] > 1e8


def test_gate_state_survives_a_checkpoint(tmp_path):
    # the gate's window through a real checkpoint (state.pt): a resumed gate decides as the uninterrupted one
    seq = [(True, 1.0), (False, 1.5), (True, 0.7), (False, 0.9), (False, 3.0), (True, 1.2), (False, 1.25)]
    straight, _ = run_gate(seq)
    _, half = run_gate(seq[:4])
    model, tok = tiny_model(char_tokenizer()), char_tokenizer()  # train.py's own save and load of a checkpoint
    checkpoint.save_checkpoint(str(tmp_path / "ckpt"), model, tok, {"step": 4, "dgg": half, "config": {}})
    state = checkpoint.load_state(str(tmp_path / "ckpt"))["dgg"]
    resumed = [gate.decide(state, g, first, 0.5, 3, "energy") for first, g in seq[4:]]
    assert resumed == straight[4:] and straight[4][0]  # the spike fires in both


def test_lm_head_energy_is_the_squared_norm_of_the_raw_gradient():
    model, ids, att, P, mask, adv, old = batch()
    response_logprobs(model, ids, att, P)[0].sum().backward()
    g = model.get_output_embeddings().weight.grad  # tied: the embedding's gradient is in it too
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert gate.lm_head_energy(model) == pytest.approx((g.double() ** 2).sum().item(), rel=1e-6)


def adamw_update(passes, dgg, model=None):
    model, ids, att, P, mask, adv, old = batch() if model is None else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    res = update.update(parallel.wrap(model, None, "cpu"), model, opt, ids, att, P, mask,
                        micro_loss_for(mask, adv, old, loss.normaliser(mask, "token-mean")), passes=passes,
                        micro_batch_size=5, dgg=dgg)
    return res, model, opt


def test_a_fired_gate_takes_no_optimizer_step():
    # tau = -inf: the gate fires on the first pass it may gate (pass 2, the window being full). That pass's
    # gradient is computed and thrown away: parameters AND AdamW's state (step count, moments) are exactly
    # those after the one applied pass, as if the second pass had never been tried.
    full = {"window": [1.0, 2.0, 3.0], "prev": 3.0}
    fired, m_fired, opt_fired = adamw_update(3, (copy.deepcopy(full), -math.inf, 3, "energy"))
    once, m_once, opt_once = adamw_update(1, None)
    assert fired["dgg"]["dgg_fired"] and fired["passes"] == 1 and fired["dgg"]["dgg_z"] is not None
    assert fired["loss"] == once["loss"] and fired["grad_norm"] == once["grad_norm"]
    for a, b in zip(m_fired.parameters(), m_once.parameters()):
        assert torch.equal(a, b)
    s_fired, s_once = opt_fired.state_dict()["state"], opt_once.state_dict()["state"]
    assert s_fired.keys() == s_once.keys()
    for k in s_once:
        assert all(torch.equal(s_fired[k][n], s_once[k][n]) for n in ("step", "exp_avg", "exp_avg_sq"))
    assert s_once[0]["step"] == 1


def test_a_gate_that_never_fires_reuses_like_ppo_epochs():
    # tau = +inf: reuse_max passes over the batch are ppo_epochs passes (the ratio against the rollout's
    # pi_old, clipped), bit for bit; the window records every pass
    state = gate.new_state()
    gated, m_gated, _ = adamw_update(3, (state, math.inf, 2, "energy"))
    epochs, m_epochs, _ = adamw_update(3, None)
    assert gated["passes"] == epochs["passes"] == 3 and not gated["dgg"]["dgg_fired"] and epochs["dgg"] == {}
    assert gated["loss"] == epochs["loss"] and gated["ratio_sums"].tolist() == epochs["ratio_sums"].tolist()
    assert all(torch.equal(a, b) for a, b in zip(m_gated.parameters(), m_epochs.parameters()))
    assert len(state["window"]) == 2 and state["prev"] == gated["dgg"]["dgg_g"]


def test_pi_old_pass_is_skipped_only_where_nothing_needs_it_before_the_update():
    # one pass of grpo or the entropy heuristics: pi_old is the training pass itself
    assert update.pi_old_is_the_update("grpo", 1) and update.pi_old_is_the_update("entropy-bonus", 1)
    # a second pass trains other weights than those that sampled
    assert not update.pi_old_is_the_update("grpo", 2)
    # these read pi_old's log-probs or entropies before the update: DS-Eq.6's term, keep masks, DASD's gap
    for algo in ("ds-grpo", "20-entropy", "stapo", "dasd"):
        assert not update.pi_old_is_the_update(algo, 1)
