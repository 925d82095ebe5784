"""DASD (Direction-Adaptive Self-Distillation, METHODS.md "DASD") by example: the shaped advantage worked out
by hand on one response, its pull/push sign, the teacher pass (the policy after a hinted prompt) and the hinted
prompts it reads, the warm start that teaches the tiny model to use a hint, and a two-step run."""
import math
import os
import random
import re

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

import checks
import countdown
import dasd
import loss
import math_task
import tasks
import warmstart
from configurator import configure
from model import char_tokenizer, response_logprobs, tiny_model
from reward import countdown_reward
from rollout import rollout
from test_model import eos_biased
from test_train import TINY, records, run, train_defaults

TIGHT = dict(rtol=0, atol=1e-6)


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def sig(x):
    return 1 / (1 + math.exp(-x))


# ============================================================================= the shaped advantage
# One response of 4 tokens and a 5th, padding column holding garbage that must be ignored.
H = t([[0., 0., .5, 1.5, 9.]])  # student entropies H_t
OLD = t([[-6., -1., -2., -1.5, 0.]])  # student log-probs l_t
TEACHER = t([[-1., -4., -1., -2.5, -50.]])  # teacher log-probs: gaps delta = [5, -3, 1, -1]
MASK = t([[1, 1, 1, 1, 0]])
A = .5 * MASK  # GRPO's A_i on the response tokens


def test_dasd_advantage_by_hand():
    # delta = teacher - student = [5, -3, 1, -1];  RMS = sqrt((25 + 9 + 1 + 1) / 4) = 3  ->  dbar = [5/3, -1, 1/3, -1/3]
    # rho = .2: tau = the .8-quantile of the sorted H [0, 0, .5, 1.5]: position .8 * 3 = 2.4, so
    #   tau = .5 + .4 * (1.5 - .5) = .9;  mean H = .5, MAD sigma = (.5 + .5 + 0 + 1) / 4 = .5
    # (tau - H) / sigma = [1.8, 1.8, .8, -1.2];  gate sigmoid(|dbar| - 1) = sigmoid([2/3, 0, -2/3, -2/3])
    # omega = tanh(1.8) sig(2/3), tanh(1.8) / 2, tanh(.8) sig(-2/3), tanh(-1.2) sig(-2/3)
    #       = .9468 * .6608, .9468 * .5, .6640 * .3392, -.8337 * .3392 = [.6256, .4734, .2253, -.2828]
    # A_hat = .5 + .1 * omega * dbar = .5 + [.1043, -.0473, .0075, .0094] = [.6043, .4527, .5075, .5094], pad 0
    omega = [math.tanh(1.8) * sig(2 / 3), math.tanh(1.8) * .5, math.tanh(.8) * sig(-2 / 3),
             math.tanh(-1.2) * sig(-2 / 3), 0.]
    dbar = [5 / 3, -1, 1 / 3, -1 / 3, 0.]
    adv, delta_bar, w = loss.dasd_advantages(A, TEACHER, OLD, H, MASK, beta_d=.1, rho=.2)
    assert_close(delta_bar, t([dbar]), **TIGHT)
    assert_close(w, t([omega]), **TIGHT)
    assert_close(adv, t([[.5 + .1 * o * d for o, d in zip(omega[:4], dbar)] + [0.]]), **TIGHT)
    assert_close(adv, t([[.6043, .4527, .5075, .5094, 0.]]), rtol=0, atol=1e-4)
    # token 0: confident, the teacher likes it more -> raised; token 1: confident, the teacher likes it less ->
    # lowered (both toward the teacher); token 3: the forking one, the teacher likes it less -> raised (away)
    assert adv[0, 0] > .5 > adv[0, 1] and adv[0, 3] > .5


def test_dasd_per_response_normalisation_by_hand():
    # two responses: gaps [5, -3, 1, -1] (RMS 3) and [2, 0] (RMS sqrt(2)). 'batch': RMS over the six tokens
    # sqrt((36 + 4) / 6) = sqrt(20/3); 'response': each row by its own RMS
    teacher = t([[-1., -4., -1., -2.5], [-1., -3., 0., 0.]])
    old = t([[-6., -1., -2., -1.5], [-3., -3., 0., 0.]])
    mask = t([[1, 1, 1, 1], [1, 1, 0, 0]])
    h = t([[0., 0., .5, 1.5], [.1, .3, 0., 0.]])
    _, batch, _ = loss.dasd_advantages(mask, teacher, old, h, mask, norm="batch")
    _, resp, _ = loss.dasd_advantages(mask, teacher, old, h, mask, norm="response")
    s = math.sqrt(20 / 3)
    assert_close(batch, t([[5 / s, -3 / s, 1 / s, -1 / s], [2 / s, 0, 0, 0]]), **TIGHT)
    assert_close(resp, t([[5 / 3, -1, 1 / 3, -1 / 3], [2 / math.sqrt(2), 0, 0, 0]]), **TIGHT)
    with pytest.raises(ValueError):
        loss.dasd_advantages(mask, teacher, old, h, mask, norm="token")


def test_pull_below_the_entropy_quantile_push_above():
    # random batch: below tau_i (rho = .2: the .8-quantile of y_i's entropies) the term has the sign of the
    # teacher - student gap (toward the teacher), above it the opposite sign (away); about rho of the tokens are
    # pushed; beta_d = 0 or a zero gap leaves GRPO's advantage exactly
    g = torch.Generator().manual_seed(0)
    B, T = 8, 20
    lengths = torch.randint(5, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    h = torch.rand(B, T, generator=g) * mask
    old = -torch.rand(B, T, generator=g) * 3 * mask
    teacher = -torch.rand(B, T, generator=g) * 3 * mask
    adv0 = torch.randn(B, 1, generator=g) * mask
    adv, dbar, omega = loss.dasd_advantages(adv0, teacher, old, h, mask, beta_d=.3, rho=.2)
    tau = torch.stack([torch.quantile(h[i, :lengths[i]], .8) for i in range(B)])[:, None]
    term, gap, live = adv - adv0, teacher - old, mask.bool()
    below, above = live & (h < tau), live & (h > tau)
    assert torch.equal(torch.sign(term[below]), torch.sign(gap[below]))
    assert torch.equal(torch.sign(term[above]), -torch.sign(gap[above]))
    assert torch.equal(omega > 0, below) and torch.equal(omega < 0, above)
    assert abs(above.sum() / mask.sum() - .2) < .06  # the top rho of each response (interpolated quantile)
    assert torch.equal(loss.dasd_advantages(adv0, teacher, old, h, mask, beta_d=0.)[0], adv0)
    assert torch.equal(loss.dasd_advantages(adv0, old, old, h, mask, beta_d=.3)[0], adv0)  # teacher = student
    # rho = 0: tau is each response's largest entropy, nothing is pushed; rho = 1: the smallest, nothing pulled
    assert (loss.dasd_advantages(adv0, teacher, old, h, mask, rho=0.)[2] >= 0).all()
    assert (loss.dasd_advantages(adv0, teacher, old, h, mask, rho=1.)[2] <= 0).all()


def test_padding_gets_no_shaping_and_changes_nothing():
    # any values at masked positions (even inf / nan) leave every output as it was, and are 0 there;
    # a response whose entropies are all equal (sigma = 0) gets omega = 0, no nan
    adv, dbar, omega = loss.dasd_advantages(A, TEACHER, OLD, H, MASK, beta_d=.1)
    junk = lambda x, v: torch.where(MASK.bool(), x, v)
    for v in (float("inf"), float("-inf"), float("nan"), 1e6):
        out = loss.dasd_advantages(A, junk(TEACHER, v), junk(OLD, -v), junk(H, v), MASK, beta_d=.1)
        for a, b in zip(out, (adv, dbar, omega)):
            assert torch.equal(a, b)
    assert adv[0, 4] == dbar[0, 4] == omega[0, 4] == 0
    flat = loss.dasd_advantages(A, TEACHER, OLD, torch.full_like(H, .7), MASK, beta_d=.1)
    assert torch.equal(flat[2], torch.zeros_like(H)) and torch.equal(flat[0], A)
    empty = torch.zeros_like(MASK)  # a row without response tokens: nothing, and no nan
    assert torch.equal(loss.dasd_advantages(0 * A, TEACHER, OLD, H, empty)[0], 0 * A)


def test_dasd_metrics():
    _, dbar, omega = loss.dasd_advantages(A, TEACHER, OLD, H, MASK, beta_d=.1)
    m = dasd.metrics(TEACHER, OLD, dbar, omega, MASK, 1.5)
    # |dbar| mean (5/3 + 1 + 1/3 + 1/3) / 4 = 5/6; 3 of 4 pulled, 1 pushed; gap mean (5 - 3 + 1 - 1) / 4 = .5
    assert m["dasd_delta_abs"] == pytest.approx(5 / 6) and m["dasd_gap"] == pytest.approx(.5)
    assert (m["dasd_pulled"], m["dasd_pushed"], m["time_teacher"]) == (.75, .25, 1.5)


# ============================================================================= hinted prompts
P = {"nums": [3, 5, 7, 2], "target": 24, "solutions": countdown.solve([3, 5, 7, 2], 24)}


def test_hinted_countdown_prompt_format_round_trips():
    plain = tasks.prompt("countdown", P, "tiny")
    hinted = tasks.hinted_prompt("countdown", P, "tiny")
    assert plain == "Use 3 5 7 2 to make 24.\n"
    assert hinted == plain + f"Hint: {P['solutions'][0]}\n"  # the plain prompt, then the hint line
    # the hint reads back out of the text, survives the character tokenizer, and is a correct answer
    tok = char_tokenizer()
    assert tok.decode(tok(hinted).input_ids) == hinted
    hint = re.fullmatch(r"Use ([\d ]+) to make (\d+)\.\nHint: (.+)\n", hinted).group(3)
    assert hint == P["solutions"][0] and countdown_reward(f"<answer>{hint}</answer>", P["nums"], P["target"]) == 1
    # an empty hint is the plain prompt exactly (the teacher is then the student); a drawn hint is a solution
    assert tasks.hinted_prompt("countdown", P, "tiny", hint_text="") == plain
    rng = random.Random(0)
    assert all(tasks.hint("countdown", P, rng) in P["solutions"] for _ in range(10))
    assert tasks.hint("countdown", {"nums": [3, 5, 7, 2], "target": 24}) == P["solutions"][0]  # hub rows: solved
    assert tasks.hint("countdown", {"nums": [1, 1], "target": 50}) == ""  # unsolvable: no hint
    instruct = tasks.hinted_prompt("countdown", P, "instruct")
    assert instruct == tasks.prompt("countdown", P, "instruct") + f" Hint: one correct equation is {hint}."


class ChatTokenizer:  # the one method tasks.prompt uses of a tokenizer with a chat template
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return f"<user>{messages[0]['content']}</user><assistant>"


def test_hinted_math_prompt_and_chat_template():
    q = {"question": "Tom has 3 pens and buys 2. How many?", "answer": "5"}
    assert tasks.hinted_prompt("math", q, "tiny") == q["question"] + "\nHint: 5\n"
    assert tasks.hinted_prompt("math", q, "instruct") == (q["question"] + " " + math_task.MATH_INSTRUCTION +
                                                          " Hint: the final answer is 5.")
    assert tasks.hinted_prompt("math", q, "tiny", hint_text="") == tasks.prompt("math", q, "tiny")
    # with a chat template the hint is inside the user turn, before the assistant turn opens
    assert tasks.hinted_prompt("countdown", P, "instruct", ChatTokenizer()) == (
        "<user>" + tasks.hinted_prompt("countdown", P, "instruct") + "</user><assistant>")


# ============================================================================= the teacher pass
@pytest.fixture(scope="module")
def policy():
    tok = char_tokenizer()
    torch.manual_seed(0)
    return eos_biased(tiny_model(tok, n_layer=2, n_embd=32, n_head=2), tok, 3.0), tok  # responses of many lengths


PROBLEMS = [P, {"nums": [10, 2, 3], "target": 4, "solutions": countdown.solve([10, 2, 3], 4)},
            {"nums": [12, 13, 14, 15], "target": 2, "solutions": countdown.solve([12, 13, 14, 15], 2)}]


def test_teacher_pass_with_an_empty_hint_is_the_student(policy):
    # same prompts -> the same forward as the rollout's log-prob pass: teacher_logp == old_logp exactly
    model, tok = policy
    G = 3
    prompts = [tasks.prompt("countdown", p, "tiny") for p in PROBLEMS]  # different lengths: left padding
    torch.manual_seed(1)
    ro = rollout(model, tok, prompts, G, 10, logprob_batch_size=4)
    assert ro.response_mask.sum(-1).unique().numel() > 1  # responses of several lengths
    empty = [tasks.hinted_prompt("countdown", p, "tiny", tok, hint_text="") for p in PROBLEMS]
    teacher = dasd.teacher_logprobs(model, tok, empty, ro, G, 1.0, batch_size=4)
    assert torch.equal(teacher, ro.old_logp)
    adv = loss.group_advantages(torch.arange(9.), G)[:, None] * ro.response_mask
    assert torch.equal(loss.dasd_advantages(adv, teacher, ro.old_logp, ro.entropy, ro.response_mask)[0], adv)


def test_teacher_pass_reads_each_response_after_its_hinted_prompt(policy):
    # with hints, row b*G + g is the policy's log-prob of response (b, g) after hinted prompt b: the same as one
    # unpadded row [hinted prompt b + that response] on its own (so left padding of both prompts is handled)
    model, tok = policy
    G = 2
    torch.manual_seed(2)
    ro = rollout(model, tok, [tasks.prompt("countdown", p, "tiny") for p in PROBLEMS], G, 10)
    hinted = dasd.teacher_prompts("countdown", PROBLEMS, "tiny", tok, random.Random(0))
    assert all(h.startswith(tasks.prompt("countdown", p, "tiny")) and "Hint: " in h for h, p in zip(hinted, PROBLEMS))
    teacher = dasd.teacher_logprobs(model, tok, hinted, ro, G)
    for i in range(len(PROBLEMS) * G):
        n = int(ro.response_mask[i].sum())
        prompt_ids = tok(hinted[i // G], return_tensors="pt").input_ids
        ids = torch.cat([prompt_ids, ro.input_ids[i:i + 1, ro.n_prompt:ro.n_prompt + n]], 1)
        with torch.no_grad():
            own, _ = response_logprobs(model, ids, torch.ones_like(ids), prompt_ids.shape[1])
        assert_close(teacher[i, :n], own[0], rtol=0, atol=1e-5)
        assert (teacher[i, n:] == 0).all()
    assert not torch.allclose(teacher, ro.old_logp)  # the hint changes what the policy predicts


# ============================================================================= the warm start with hints
def test_warm_start_hint_frac(tmp_path, monkeypatch):
    # hint_frac = 0 is the plain warm start exactly (the hints have a random stream of their own); with
    # hint_frac = 1 every prompt carries its own target's solution as the hint
    problems = countdown.generate_problems(40, seed=0, sizes=(3,), max_num=6)
    seen, real = [], tasks.hinted_prompt

    def recorded(*args, **kwargs):  # every hinted prompt the warm start builds
        seen.append(real(*args, **kwargs))
        return seen[-1]
    monkeypatch.setattr(tasks, "hinted_prompt", recorded)
    weights = {}
    for frac in (0.0, 1e-12, 1.0):
        out = str(tmp_path / f"ws{frac}")
        warmstart.warm_start(out, "countdown", problems, steps=2, batch_size=8, log=lambda *a: None, hint_frac=frac)
        weights[frac] = load_file(os.path.join(out, "model.safetensors"))
    assert len(seen) == 16  # only hint_frac = 1: 2 steps x 8 prompts
    for text in seen:
        nums, target, hint = re.fullmatch(r"Use ([\d ]+) to make (\d+)\.\nHint: (.+)\n", text).groups()
        assert countdown_reward(f"<answer>{hint}</answer>", list(map(int, nums.split())), int(target)) == 1
    assert all(torch.equal(weights[0.0][k], weights[1e-12][k]) for k in weights[0.0])
    assert not all(torch.equal(weights[0.0][k], weights[1.0][k]) for k in weights[0.0])


# ============================================================================= a run
def test_train_dasd_runs_two_steps_from_a_hinted_warm_start(tmp_path):
    out = str(tmp_path / "run")
    run(f"--out_dir={out}", "--algo=dasd", *TINY, "--eval_at_start=False")
    assert os.path.exists(os.path.join(out, "warmstart_countdown_hint0.5", "config.json"))
    assert not os.path.exists(os.path.join(out, "warmstart_countdown"))  # the plain cache is not the dasd one
    steps = [r for r in records(out) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["dasd_delta_abs"] > 0 and 0 < r["dasd_pulled"] + r["dasd_pushed"] <= 1
        assert r["dasd_pushed"] < r["dasd_pulled"]  # rho = .2: about a fifth of each response's tokens pushed
        assert math.isfinite(r["dasd_gap"]) and r["time_teacher"] > 0  # timed (how long: a benchmark's question)
        assert r["ds_abs"] > 0  # the teacher term as it entered the advantage (the DS metrics' slot)
    assert os.path.exists(os.path.join(out, "final_eval.json"))


@pytest.mark.parametrize("arg, message", [
    ("--dasd_beta=-0.1", "dasd_beta must be >= 0"),
    ("--dasd_rho=1.5", "dasd_rho must be in [0, 1]"),
    ("--dasd_norm=token", "dasd_norm must be one of ('batch', 'response')"),
    ("--warmstart_hint_frac=2.0", "warmstart_hint_frac must be in [0, 1], or -1 (auto)"),
])
def test_dasd_settings_out_of_range_are_one_line(arg, message):
    # checks.check, as train.py calls it before anything is written (tests/test_train.py runs that path end to end)
    with pytest.raises(SystemExit) as e:
        checks.check(configure(train_defaults(), ["--algo=dasd", *TINY, arg]))
    assert message in str(e.value) and "\n" not in str(e.value)
